"""Reading a case onto the working grid, with MONAI's spatial transforms.

For each case (:class:`~shared.datasets.layouts.CaseFiles`):

1. image and label are read with :func:`shared.io.load_image` / :func:`shared.io.load_label_map`
   (nibabel: FreeSurfer ``.mgz`` files are big-endian, which MONAI's own reader refuses); an image
   on another grid than its label
   (SynthSeg writes 1 mm segmentations of any input) is first resampled onto the label's grid
   (:class:`monai.transforms.ResampleToMatch`, bilinear);
2. both are reoriented to RAS (:class:`monai.transforms.Orientation`) and resampled to the
   working spacing (:class:`monai.transforms.Spacing`: image bilinear, label nearest);
3. the label ids become the models' ids (a rule of :mod:`shared.datasets.label_rules`);
4. the volume is cropped to the head (:class:`monai.transforms.CropForeground`: the labelled
   voxels for anatomy, the non-zero image voxels for tumours) and padded with zeros to the
   working shape around it (:class:`monai.transforms.ResizeWithPadOrCrop`). A head larger than
   the working field of view is an error, not a silent cut.

Every step updates the affine, so the returned arrays sit at their true place in the
scanner's space: a prediction saved with that affine overlays the source image in any viewer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from shared.datasets.layouts import CaseFiles
from shared.io import AFFINE_TOLERANCE_MM, InputError, load_image, load_label_map

#: Where the head is found: the labelled voxels (anatomy) or the non-zero image voxels (tumours).
FOREGROUNDS: tuple[str, ...] = ("label", "image")


@dataclass(frozen=True)
class WorkingGrid:
    """The grid every case is brought to: ``shape`` voxels of ``spacing`` mm, RAS orientation."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def __post_init__(self) -> None:
        shape, spacing = tuple(self.shape), tuple(self.spacing)
        if len(shape) != 3 or any(int(n) != n or n < 8 for n in shape):
            raise InputError(f"working grid: shape must be three integers >= 8, got {self.shape!r}")
        if len(spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in spacing):
            raise InputError(f"working grid: spacing must be three positive sizes in mm, got {self.spacing!r}")
        object.__setattr__(self, "shape", tuple(int(n) for n in shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in spacing))

    @property
    def fov_mm(self) -> tuple[float, float, float]:
        """Field of view per axis in mm."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing))  # type: ignore[return-value]


@dataclass(frozen=True)
class CaseArrays:
    """One case on the working grid.

    Attributes:
        case: the files it was read from.
        image: ``(X, Y, Z)`` float32 intensities.
        label: ``(X, Y, Z)`` model label ids (int16 anatomy, uint8 tumour mask).
        affine: ``(4, 4)`` voxel-to-scanner matrix (RAS).
    """

    case: CaseFiles
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray


def _meta_tensor(array: np.ndarray, affine: np.ndarray) -> torch.Tensor:
    from monai.data import MetaTensor

    return MetaTensor(torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)[None], affine=affine)


def read_case(
    case: CaseFiles,
    grid: WorkingGrid,
    label_rule: Callable[[np.ndarray, str], np.ndarray],
    foreground: str = "label",
) -> CaseArrays:
    """Read ``case`` onto ``grid`` (see the module docstring).

    Args:
        case: image and label files.
        grid: the working grid.
        label_rule: the dataset's ids -> the models' ids, e.g. :class:`~shared.datasets.label_rules.WholeTumour`.
        foreground: where the head is (:data:`FOREGROUNDS`).

    Raises:
        InputError: unreadable files, a label map with ids the rule refuses, a head larger than the
            working field of view, an empty foreground.
    """
    from monai.transforms import CropForeground, Orientation, ResampleToMatch, ResizeWithPadOrCrop, Spacing

    if foreground not in FOREGROUNDS:
        raise InputError(f"foreground: expected one of {', '.join(FOREGROUNDS)}, got {foreground!r}")
    image_volume, label_volume = load_image(case.image), load_label_map(case.label)
    image = _meta_tensor(image_volume.array, image_volume.affine)
    label = _meta_tensor(label_volume.array, label_volume.affine)
    same_grid = image_volume.array.shape == label_volume.array.shape and np.allclose(
        image_volume.affine, label_volume.affine, atol=AFFINE_TOLERANCE_MM, rtol=0
    )
    if not same_grid:
        image = ResampleToMatch(mode="bilinear", padding_mode="zeros")(image, label)
    orient = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))  # nibabel's RAS affines
    image, label = orient(image), orient(label)
    image = Spacing(pixdim=grid.spacing, mode="bilinear")(image)
    label = Spacing(pixdim=grid.spacing, mode="nearest")(label)
    # the two resampled grids can differ by a voxel at the far edge: the label's grid rules
    if image.shape != label.shape:
        image = ResampleToMatch(mode="bilinear", padding_mode="zeros")(image, label)
    ruled = label_rule(np.rint(label.numpy()[0]).astype(np.int32), str(case.label))
    label = _meta_tensor(ruled, np.asarray(label.affine))
    mask = label.numpy()[0] > 0 if foreground == "label" else np.abs(image.numpy()[0]) > 1e-6
    if not mask.any():
        raise InputError(f"{case.label if foreground == 'label' else case.image}: no {foreground} voxel to centre on")
    crop = CropForeground(select_fn=lambda _: torch.as_tensor(mask[None]), margin=0, allow_smaller=True)
    box_start, box_end = crop.compute_bounding_box(image)
    extent = (np.asarray(box_end) - np.asarray(box_start)) * np.asarray(grid.spacing)
    too_big = [axis for axis in range(3) if extent[axis] > grid.fov_mm[axis] + 1e-6]
    if too_big:
        spans = ", ".join(f"axis {a}: {extent[a]:.0f} mm > {grid.fov_mm[a]:.0f} mm" for a in too_big)
        raise InputError(f"{case.image}: head larger than the working field of view ({spans})")
    image, label = crop.crop_pad(image, box_start, box_end), crop.crop_pad(label, box_start, box_end)
    fit = ResizeWithPadOrCrop(spatial_size=grid.shape, mode="constant")
    image, label = fit(image), fit(label)
    return CaseArrays(
        case=case,
        image=image.numpy()[0].astype(np.float32),
        label=np.rint(label.numpy()[0]).astype(ruled.dtype),
        affine=np.asarray(image.affine, dtype=np.float64),
    )
