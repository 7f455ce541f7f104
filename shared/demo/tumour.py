"""Demo tumour cases: a FLAIR-like brain with a hyperintense whole-tumour region.

The tumour is a core (heterogeneous, moderately bright, with a darker necrotic centre)
inside oedema (very bright on FLAIR), with an irregular boundary from a smooth random
radius modulation. It is confined to brain parenchyma (never background, CSF or
ventricles), and its centre is a white-matter voxel, so the mask is never empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.demo.anatomy import APPEARANCE_PART, generate_label_map, subject_rng
from shared.demo.fields import WaveField
from shared.demo.flair import draw_rendering, render_flair
from shared.demo.grid import Grid
from shared.io import InputError
from shared.labels import parenchyma_mask

#: Default range of the tumour's mean radius (mm).
DEFAULT_RADIUS_RANGE_MM: tuple[float, float] = (10.0, 25.0)

#: Random stream of tumour cases (brains use 0).
TUMOUR_STREAM = 1

#: Cerebral white matter, where tumour centres are drawn.
CEREBRAL_WHITE_MATTER_IDS: tuple[int, int] = (2, 41)

#: Enlargement range of the brains that host tumours (normal ventricles).
TUMOUR_HOST_ENLARGEMENT_RANGE: tuple[float, float] = (1.0, 1.5)


@dataclass(frozen=True)
class TumourCase:
    """One generated tumour case.

    Attributes:
        image: ``(X, Y, Z)`` float32 FLAIR-like image.
        mask: ``(X, Y, Z)`` uint8 whole-tumour mask (0/1).
        labels: ``(X, Y, Z)`` int16 anatomy of the host brain (tumour not painted in).
        radius_mm: the requested mean radius.
        centre_voxel: the tumour centre (voxel indices).
    """

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    radius_mm: float
    centre_voxel: tuple[int, int, int]


def check_radius_range(radius_range_mm: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in radius_range_mm)
    except (TypeError, ValueError) as error:
        raise InputError(f"tumour radius range: expected two numbers (mm), got {radius_range_mm!r}") from error
    if not (0 < low <= high):
        raise InputError(f"tumour radius range: expected 0 < low <= high (mm), got {radius_range_mm!r}")
    return low, high


def _centre_voxel(
    labels: np.ndarray, rng: np.random.Generator, centre_fraction: Sequence[float] | None
) -> tuple[int, int, int]:
    """A white-matter voxel: drawn at random, or the one nearest the requested fractional position."""
    candidates = np.argwhere(np.isin(labels, CEREBRAL_WHITE_MATTER_IDS))
    draw = int(rng.integers(0, len(candidates)))  # always drawn, so other draws do not depend on the choice
    if centre_fraction is None:
        return tuple(int(v) for v in candidates[draw])  # type: ignore[return-value]
    fraction = np.asarray(centre_fraction, dtype=np.float64)
    if fraction.shape != (3,) or np.any(fraction < 0) or np.any(fraction > 1):
        raise InputError(f"tumour centre: expected three fractions of the grid in [0, 1], got {centre_fraction!r}")
    voxel = np.round(fraction * (np.asarray(labels.shape) - 1)).astype(int)
    if not np.isin(labels[tuple(voxel)], CEREBRAL_WHITE_MATTER_IDS):
        raise InputError(
            f"tumour centre {tuple(float(v) for v in fraction)}: voxel {tuple(voxel.tolist())} is not in cerebral "
            "white matter; choose a position inside the brain"
        )
    return tuple(int(v) for v in voxel)  # type: ignore[return-value]


def generate_tumour_case(
    grid: Grid,
    seed: int,
    index: int,
    radius_range_mm: Sequence[float] = DEFAULT_RADIUS_RANGE_MM,
    centre_fraction: Sequence[float] | None = None,
) -> TumourCase:
    """Tumour case ``index`` of a dataset drawn with ``seed``.

    Args:
        grid: voxel grid.
        seed: dataset seed; same ``(seed, index)`` -> same case.
        index: case number.
        radius_range_mm: the mean radius is uniform in this range.
        centre_fraction: fixed centre as fractions of the grid per axis (must fall in
            cerebral white matter); ``None`` draws a white-matter voxel.
    """
    low, high = check_radius_range(radius_range_mm)
    labels, _ = generate_label_map(
        grid, seed, index, enlargement_range=TUMOUR_HOST_ENLARGEMENT_RANGE, stream=TUMOUR_STREAM
    )
    rng = subject_rng(seed, TUMOUR_STREAM, index, APPEARANCE_PART)
    radius = float(rng.uniform(low, high))
    boundary = WaveField.random(rng, 8, (25.0, 70.0), 0.15)
    texture = WaveField.random(rng, 8, (3.0, 10.0), 1.0)
    core_fraction = float(rng.uniform(0.35, 0.6))
    rendering = draw_rendering(rng)
    centre = _centre_voxel(labels, rng, centre_fraction)

    x, y, z = grid.world_coordinates()
    centre_mm = [float(axis[centre]) for axis in (x, y, z)]
    dx, dy, dz = x - centre_mm[0], y - centre_mm[1], z - centre_mm[2]
    # Normalised distance; the boundary field is evaluated on the unit sphere around the centre
    # (directions scaled to 25 mm) so the outline is irregular but star-shaped.
    distance = np.sqrt(dx**2 + dy**2 + dz**2)
    unit = 25.0 / np.maximum(distance, 1e-3)
    rho = distance / (radius * (1.0 + np.clip(boundary(dx * unit, dy * unit, dz * unit), -0.45, 0.45)))
    mask = (rho < 1.0) & parenchyma_mask(labels)
    mask[centre] = True

    lesion = np.zeros(grid.shape, dtype=np.float32)
    oedema_level = 1.05 + 0.08 * texture(x, y, z)
    lesion[mask] = oedema_level[mask]
    core = mask & (rho < core_fraction)
    lesion[core] = 0.80 + 0.15 * texture(x[core], y[core], z[core])
    necrosis = mask & (rho < 0.4 * core_fraction)
    lesion[necrosis] = 0.45
    image = render_flair(labels, grid, rendering, extra=lesion)
    return TumourCase(image=image, mask=mask.astype(np.uint8), labels=labels, radius_mm=radius, centre_voxel=centre)
