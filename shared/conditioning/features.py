"""Conditioning quantities of both papers (docs/method.md, section 1), computed exactly.

Ventricles (paper 000): ventricle volume and intracranial volume (ICV) in mL from the
affine's voxel volume, their ratio, and the min-max normaliser that maps the ratio to the
model's condition ``c`` in ``[0, 1]`` over the training set.

Tumours (paper 003): the 9-vector ``[volume, surface area, sphericity, centre x, centre y,
centre z, bbox w, bbox h, bbox d]`` of a binary whole-tumour mask, and the normaliser that
divides volume and surface area by their training-set maxima.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
from scipy import ndimage
from skimage.measure import marching_cubes, mesh_surface_area

from shared.io import InputError, read_json, voxel_volume_mm3, write_json
from shared.labels import intracranial_mask, ventricle_mask

logger = logging.getLogger(__name__)

MM3_PER_ML: Final[float] = 1000.0


# ----------------------------------------------------------------------------- ventricles


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL."""
    return voxel_volume_mm3(affine) / MM3_PER_ML


def mask_volume_ml(mask: np.ndarray, affine: np.ndarray) -> float:
    """Volume of the true voxels of a boolean mask in mL (voxel count x voxel volume)."""
    return int(np.count_nonzero(mask)) * voxel_volume_mm3(affine) / MM3_PER_ML


def ventricle_volume_ml(label_map: np.ndarray, affine: np.ndarray) -> float:
    """Volume of the ventricular system (labels 4, 43, 5, 44, 14, 15) in mL."""
    return mask_volume_ml(ventricle_mask(label_map), affine)


def icv_ml(label_map: np.ndarray, affine: np.ndarray) -> float:
    """Intracranial volume in mL: every non-background voxel (CSF included)."""
    return mask_volume_ml(intracranial_mask(label_map), affine)


@dataclass(frozen=True)
class VentricleMeasures:
    """Ventricle volume, ICV (both mL) and their ratio for one label map."""

    ventricle_ml: float
    icv_ml: float
    ratio: float


def measure_ventricles(label_map: np.ndarray, affine: np.ndarray) -> VentricleMeasures:
    """Ventricle volume, ICV and ratio of a ``(X, Y, Z)`` FreeSurfer/SynthSeg label map.

    Raises:
        ValueError: the label map is all background (ICV would be zero).
    """
    ventricles = ventricle_volume_ml(label_map, affine)
    icv = icv_ml(label_map, affine)
    if icv <= 0:
        raise ValueError("label map is all background: intracranial volume is zero")
    return VentricleMeasures(ventricle_ml=ventricles, icv_ml=icv, ratio=ventricles / icv)


@dataclass(frozen=True)
class MinMaxNormaliser:
    """Maps a quantity to ``[0, 1]`` over its training range: ``c = (x - min) / (max - min)``.

    Values outside the training range give ``c < 0`` or ``c > 1``; they are allowed (the
    paper extrapolates to larger ventricles with ``c > 1``) and reported as a warning.
    """

    minimum: float
    maximum: float
    quantity: str = "ventricle_ratio"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.minimum) and np.isfinite(self.maximum)):
            raise ValueError(f"{self.quantity} normaliser: min and max must be finite")
        if self.maximum <= self.minimum:
            raise ValueError(
                f"{self.quantity} normaliser: max ({self.maximum}) must exceed min ({self.minimum}); "
                "the training set needs at least two different values"
            )

    @classmethod
    def fit(cls, values: Iterable[float], quantity: str = "ventricle_ratio") -> MinMaxNormaliser:
        """Normaliser whose min and max are those of ``values`` (the training set)."""
        array = np.asarray(list(values), dtype=np.float64)
        if array.size == 0:
            raise ValueError(f"{quantity} normaliser: no values to fit")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{quantity} normaliser: values contain NaN/Inf")
        return cls(minimum=float(array.min()), maximum=float(array.max()), quantity=quantity)

    def transform(self, value: float | np.ndarray) -> float | np.ndarray:
        """Quantity -> condition ``c`` (a float for a scalar, an array for an array)."""
        return _same_kind(value, (np.asarray(value, dtype=np.float64) - self.minimum) / (self.maximum - self.minimum))

    def inverse(self, c: float | np.ndarray) -> float | np.ndarray:
        """Condition ``c`` -> quantity; warns when ``c`` lies outside ``[0, 1]``."""
        self.report_extrapolation(c)
        return _same_kind(c, np.asarray(c, dtype=np.float64) * (self.maximum - self.minimum) + self.minimum)

    def report_extrapolation(self, c: float | np.ndarray) -> bool:
        """Log a warning and return True when any ``c`` lies outside the training range ``[0, 1]``."""
        values = np.atleast_1d(np.asarray(c, dtype=np.float64))
        outside = values[(values < 0) | (values > 1)]
        if outside.size:
            logger.warning(
                "%s condition(s) outside the training range [0, 1] (e.g. c=%.3g): extrapolating beyond "
                "the training data; results may degrade",
                outside.size,
                outside[0],
            )
            return True
        return False

    def save(self, path: str | os.PathLike) -> None:
        """Write ``{"quantity", "minimum", "maximum"}`` as JSON (atomically)."""
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> MinMaxNormaliser:
        """Read a normaliser written by :meth:`save`."""
        data = read_json(path)
        try:
            return cls(minimum=float(data["minimum"]), maximum=float(data["maximum"]), quantity=str(data["quantity"]))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{path}: not a min-max normaliser file ({error})") from error


def _same_kind(template: float | np.ndarray, result: np.ndarray) -> float | np.ndarray:
    """``result`` as a float when ``template`` is a scalar, else as an array."""
    return float(result) if np.ndim(template) == 0 else result


# ----------------------------------------------------------------------------- tumours

TUMOUR_FEATURE_NAMES: Final[tuple[str, ...]] = (
    "volume",
    "surface_area",
    "sphericity",
    "centre_x",
    "centre_y",
    "centre_z",
    "bbox_w",
    "bbox_h",
    "bbox_d",
)

#: Feature vector of an empty mask: all zeros. No non-empty mask has volume 0, so the
#: vector is unambiguous, and it is finite (never NaN).
EMPTY_TUMOUR_FEATURES: Final[np.ndarray] = np.zeros(len(TUMOUR_FEATURE_NAMES), dtype=np.float64)

#: Gaussian sigma (voxels) applied to the mask before marching cubes. Marching cubes on a
#: raw binary mask follows the voxel staircase and overestimates a ball's area by ~9%;
#: with this light smoothing a ball (radius >= 5 voxels) has sphericity ~0.95-0.97 and a cube
#: of side 20 ~0.84 (0.806 + 4%); small shapes read rounder (cube of side 6: ~0.89).
SURFACE_SMOOTHING_SIGMA: Final[float] = 0.5


def _tumour_mesh(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes mesh ``(vertices, faces)`` of a non-empty binary mask.

    Works on the mask's bounding box plus a margin, so the cost depends on the tumour's size,
    not the grid's. The mask is smoothed first (:data:`SURFACE_SMOOTHING_SIGMA`); where that
    leaves nothing above the 0.5 level (isolated single voxels), the raw mask is used.
    """
    mask = np.asarray(mask) > 0
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(mask))
    raw = np.pad(mask[box].astype(np.float32), 3)
    smooth = ndimage.gaussian_filter(raw, SURFACE_SMOOTHING_SIGMA)
    field = smooth if smooth.max() > 0.5 else raw
    vertices, faces, _, _ = marching_cubes(field, level=0.5, spacing=tuple(float(s) for s in spacing))
    return vertices, faces


def _enclosed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed triangle mesh (divergence theorem)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    return float(abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)


def tumour_features(mask: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Raw tumour feature vector of a whole-tumour mask on the working grid.

    Args:
        mask: ``(X, Y, Z)``; voxels ``> 0`` are tumour.
        spacing: voxel size; volume and area come out in its units (voxels by default).

    Returns:
        ``(9,)`` float64, in the order of :data:`TUMOUR_FEATURE_NAMES`:
        volume (voxel count x voxel volume), surface area (marching cubes), sphericity
        ``(36 pi V^2)^(1/3) / A`` with ``V`` and ``A`` both from the mesh (so in ``[0, 1]``), centre of mass as
        ``(mean voxel index + 0.5) / grid size`` per axis (so in ``(0, 1)``), and bounding
        box extents ``(max - min + 1) / grid size`` per axis. An empty mask gives
        :data:`EMPTY_TUMOUR_FEATURES`.
    """
    mask = np.asarray(mask) > 0
    if mask.ndim != 3:
        raise ValueError(f"tumour mask must be 3D, got shape {mask.shape}")
    if not mask.any():
        return EMPTY_TUMOUR_FEATURES.copy()
    grid = np.asarray(mask.shape, dtype=np.float64)
    voxel_volume = float(np.prod(spacing))
    volume = float(np.count_nonzero(mask)) * voxel_volume
    vertices, faces = _tumour_mesh(mask, spacing)
    area = float(mesh_surface_area(vertices, faces))
    # Sphericity from the mesh's own area and enclosed volume, so it is <= 1 (isoperimetric
    # inequality) at every size; the clip only guards rounding.
    enclosed = _enclosed_volume(vertices, faces)
    sphericity = min(1.0, (36.0 * np.pi * enclosed**2) ** (1.0 / 3.0) / area) if area > 0 else 0.0
    indices = np.nonzero(mask)
    centre = (np.array([idx.mean() for idx in indices]) + 0.5) / grid
    extent = (np.array([idx.max() - idx.min() + 1 for idx in indices], dtype=np.float64)) / grid
    return np.concatenate([[volume, area, sphericity], centre, extent])


@dataclass(frozen=True)
class TumourFeatureNormaliser:
    """Divides volume and surface area by their training-set maxima; other features pass through."""

    volume_max: float
    surface_area_max: float

    def __post_init__(self) -> None:
        if not (self.volume_max > 0 and self.surface_area_max > 0):
            raise ValueError("tumour normaliser: training maxima must be positive (are all training masks empty?)")

    @classmethod
    def fit(cls, features: np.ndarray) -> TumourFeatureNormaliser:
        """Fit on raw training features ``(N, 9)``."""
        features = _as_feature_matrix(features)
        return cls(volume_max=float(features[:, 0].max()), surface_area_max=float(features[:, 1].max()))

    @property
    def _scale(self) -> np.ndarray:
        scale = np.ones(len(TUMOUR_FEATURE_NAMES))
        scale[0], scale[1] = self.volume_max, self.surface_area_max
        return scale

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Raw features ``(..., 9)`` -> conditioning vectors ``(..., 9)``."""
        return _as_feature_array(features) / self._scale

    def inverse(self, vectors: np.ndarray) -> np.ndarray:
        """Conditioning vectors ``(..., 9)`` -> raw features ``(..., 9)``."""
        return _as_feature_array(vectors) * self._scale

    def save(self, path: str | os.PathLike) -> None:
        """Write the maxima (and the feature order) as JSON, atomically."""
        write_json(path, {**asdict(self), "feature_names": list(TUMOUR_FEATURE_NAMES)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> TumourFeatureNormaliser:
        """Read a normaliser written by :meth:`save`."""
        data = read_json(path)
        try:
            return cls(volume_max=float(data["volume_max"]), surface_area_max=float(data["surface_area_max"]))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{path}: not a tumour feature normaliser file ({error})") from error


def _as_feature_array(features: np.ndarray) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.shape[-1:] != (len(TUMOUR_FEATURE_NAMES),):
        raise ValueError(f"tumour condition vectors need {len(TUMOUR_FEATURE_NAMES)} values, got shape {array.shape}")
    return array


def _as_feature_matrix(features: np.ndarray) -> np.ndarray:
    array = np.atleast_2d(_as_feature_array(features))
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError("tumour normaliser: need a (N, 9) array of training features")
    return array


def inverse_frequency_weights(c: Iterable[float], bin_width: float = 0.1) -> np.ndarray:
    """Per-sample weights ``1 / count(bin of c)`` over ``bin_width``-wide bins (the authors' balancing)."""
    values = np.asarray(list(c), dtype=np.float64)
    bins = np.floor(values / bin_width).astype(np.int64)
    _, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def inverse_frequency_sampler(c: Iterable[float], bin_width: float = 0.1) -> Any:
    """``torch.utils.data.WeightedRandomSampler`` drawing every bin of ``c`` about equally often."""
    from torch.utils.data import WeightedRandomSampler

    weights = inverse_frequency_weights(c, bin_width)
    return WeightedRandomSampler(weights.tolist(), num_samples=len(weights), replacement=True)
