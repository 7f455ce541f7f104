"""Procedural brain label maps with FreeSurfer/SynthSeg label ids.

Each subject is a standard template brain (ellipsoids placed in mm, two hemispheres,
ventricles inside the white matter, deep grey nuclei around them, cerebellum and brain
stem below) seen through a smooth random deformation, a small rotation and per-axis
scaling, with a folded cortex and a per-subject **ventricle enlargement** ``e``: the
ventricular system's volume grows about ``e``-fold (width and height by ``e**0.4``,
length by ``e**0.2``) and the caudate, thalamus and lentiform nuclei move outwards to
make room. ``e = 1`` is a normal brain (ventricles ~1% of ICV); ``e = 3..5`` looks like
hydrocephalus.

Every class of :data:`shared.labels.SYNTHSEG_CLASSES` appears in every generated map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.demo.fields import WaveField
from shared.demo.grid import Grid
from shared.labels import CSF_LABEL_ID

#: Semi-axes (mm) of the template's intracranial ellipsoid (x, y, z).
ICV_SEMI_AXES_MM: tuple[float, float, float] = (68.0, 85.0, 62.0)

#: The head is shrunk (never enlarged) so that the ICV spans at most this fraction of the
#: field of view per axis.
MAX_FOV_FRACTION = 0.92

#: Radial positions (fraction of the ICV radius) of the pial and white-matter surfaces.
PIAL_RADIUS = 0.95
WHITE_RADIUS = 0.80
CORTICAL_FOLD_DEPTH = 0.03

#: Default range of the per-subject ventricle enlargement (volume factor).
DEFAULT_ENLARGEMENT_RANGE: tuple[float, float] = (1.0, 5.0)


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid in template mm."""

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]

    def contains(self, q: Sequence[np.ndarray], min_semi_axis: float) -> np.ndarray:
        """Boolean ``(X, Y, Z)`` mask of template points ``q = (qx, qy, qz)`` inside.

        Semi-axes below ``min_semi_axis`` are raised to it so that small structures
        survive coarse grids.
        """
        total = np.zeros(q[0].shape, dtype=np.float32)
        for coordinate, centre, semi in zip(q, self.centre, self.semi_axes):
            total += ((coordinate - np.float32(centre)) / np.float32(max(semi, min_semi_axis))) ** 2
        return total < 1.0


@dataclass(frozen=True)
class SubjectDraws:
    """Everything random about one subject, drawn in a fixed order from its own stream."""

    enlargement: float
    head_scale: np.ndarray  # (3,) per-axis scale of the template
    yaw_rad: float  # rotation about the z axis
    deformation: tuple[WaveField, WaveField, WaveField]  # displacement field, mm
    folding: WaveField  # cortical folding pattern, ~unit std
    ventricle_asymmetry: np.ndarray  # (2,) left / right width factors


def draw_subject(
    rng: np.random.Generator, enlargement_range: tuple[float, float] = DEFAULT_ENLARGEMENT_RANGE
) -> SubjectDraws:
    """Draw one subject's anatomy; the enlargement is log-uniform over ``enlargement_range``."""
    low, high = float(enlargement_range[0]), float(enlargement_range[1])
    if not (0 < low <= high):
        raise ValueError(f"enlargement range must satisfy 0 < low <= high, got {enlargement_range}")
    enlargement = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return SubjectDraws(
        enlargement=enlargement,
        head_scale=rng.uniform(0.94, 1.06, size=3),
        yaw_rad=float(np.deg2rad(rng.uniform(-4.0, 4.0))),
        deformation=tuple(WaveField.random(rng, 4, (70.0, 200.0), 2.5) for _ in range(3)),  # type: ignore[arg-type]
        folding=WaveField.random(rng, 24, (16.0, 32.0), 1.0),
        ventricle_asymmetry=rng.uniform(0.9, 1.1, size=2),
    )


def template_coordinates(grid: Grid, draws: SubjectDraws) -> tuple[list[np.ndarray], float]:
    """World voxel centres mapped into template mm, and the template's smallest useful semi-axis.

    Returns:
        ``([qx, qy, qz], min_semi_axis_mm)``; each ``q`` is ``(X, Y, Z)`` float32.
    """
    x, y, z = grid.world_coordinates()
    dx, dy, dz = (field(x, y, z) for field in draws.deformation)
    x, y, z = x + dx, y + dy, z + dz
    cos, sin = np.float32(np.cos(draws.yaw_rad)), np.float32(np.sin(draws.yaw_rad))
    x, y = cos * x + sin * y, -sin * x + cos * y
    fit = min(
        1.0, float(np.min(MAX_FOV_FRACTION * grid.fov_mm / (2 * np.asarray(ICV_SEMI_AXES_MM) * draws.head_scale)))
    )
    scale = (fit * draws.head_scale).astype(np.float32)
    q = [x / scale[0], y / scale[1], z / scale[2]]
    min_semi_axis = 0.75 * max(grid.spacing) / float(scale.min())
    return q, min_semi_axis


def render_label_map(grid: Grid, draws: SubjectDraws) -> np.ndarray:
    """Paint one subject's label map; returns ``(X, Y, Z)`` int16 FreeSurfer ids."""
    q, min_semi = template_coordinates(grid, draws)
    qx = q[0]
    left = qx < 0
    labels = np.zeros(grid.shape, dtype=np.int16)

    def paint(mask: np.ndarray, left_id: int, right_id: int | None = None) -> None:
        region = mask & icv
        if right_id is None:
            labels[region] = left_id
        else:
            labels[region] = np.where(left[region], left_id, right_id)

    def ellipsoid(centre: tuple[float, float, float], semi: tuple[float, float, float]) -> np.ndarray:
        return Ellipsoid(centre, semi).contains(q, min_semi)

    def pair(
        centre: tuple[float, float, float],
        semi: tuple[float, float, float],
        left_id: int,
        right_id: int,
        shift: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        """Paint a left/right pair mirrored about x = 0; ``shift`` moves each side outwards (mm)."""
        x0, y0, z0 = centre
        paint(ellipsoid((-(x0 + shift[0]), y0, z0), semi), left_id)
        paint(ellipsoid((x0 + shift[1], y0, z0), semi), right_id)

    radius = np.sqrt(sum((c / np.float32(a)) ** 2 for c, a in zip(q, ICV_SEMI_AXES_MM)))
    icv = radius < 1.0
    folding = draws.folding(*q)
    folded_radius = radius + np.float32(CORTICAL_FOLD_DEPTH) * folding

    # Cerebrum: CSF shell, cortex ribbon, white matter, sulcal CSF.
    labels[icv] = CSF_LABEL_ID
    paint(folded_radius < PIAL_RADIUS, 3, 42)
    paint(folded_radius < WHITE_RADIUS, 2, 41)
    paint((folded_radius >= 0.88) & (folded_radius < PIAL_RADIUS) & (folding > 1.2), CSF_LABEL_ID)

    # Ventricle geometry for this subject (mm); the nuclei move out by the ventricles' growth.
    e = draws.enlargement
    grow_wide, grow_long = e**0.4, e**0.2
    widths = 5.0 * grow_wide * draws.ventricle_asymmetry  # lateral ventricle half-widths, left / right
    push = (float(widths[0]) - 5.0, float(widths[1]) - 5.0)
    half_push = (push[0] / 2, push[1] / 2)
    body_top = 14.0 + 6.0 * grow_wide
    fissure_half_width = max(1.5, 0.5 * min_semi)
    paint((np.abs(qx) < fissure_half_width) & (q[2] > body_top + 4.0) & (folded_radius < PIAL_RADIUS), CSF_LABEL_ID)

    # Cerebellum, brain stem, deep grey matter.
    pair((22.0, -50.0, -38.0), (26.0, 24.0, 18.0), 8, 47)
    pair((22.0, -50.0, -38.0), (13.0, 12.0, 9.0), 7, 46)
    paint(ellipsoid((0.0, -18.0, -38.0), (10.0, 12.0, 26.0)), 16)
    pair((10.0, -10.0, -14.0), (6.0, 8.0, 6.0), 28, 60)
    pair((9.0, -12.0, 4.0), (8.0, 14.0, 8.0), 10, 49, push)
    pair((13.0, 12.0, 12.0), (6.0, 13.0, 9.0), 11, 50, push)
    pair((25.0, 4.0, 2.0), (6.0, 14.0, 9.0), 12, 51, half_push)
    pair((19.0, 0.0, 0.0), (3.5, 8.0, 6.0), 13, 52, half_push)
    pair((9.0, 16.0, -6.0), (5.0, 5.0, 4.5), 26, 58, half_push)
    pair((22.0, 2.0, -20.0), (7.0, 7.0, 7.0), 18, 54)
    pair((26.0, -18.0, -16.0), (6.0, 16.0, 6.0), 17, 53)

    # Ventricular system, painted last: lateral (body, frontal horn, atrium), inferior horns, 3rd, 4th.
    for side, (sign, label_id) in enumerate(((-1.0, 4), (1.0, 43))):
        w = float(widths[side])
        stretch = 15.0 * (grow_long - 1.0)
        paint(ellipsoid((sign * (1.5 + w), -4.0, 14.0), (w, 24.0 * grow_long, 6.0 * grow_wide)), label_id)
        paint(
            ellipsoid((sign * (1.5 + 0.9 * w), 20.0 + stretch, 8.0), (0.9 * w, 10.0 * grow_long, 7.0 * grow_wide)),
            label_id,
        )
        paint(
            ellipsoid((sign * (4.0 + 1.1 * w), -28.0 - stretch, 8.0), (1.1 * w, 11.0 * grow_long, 7.0 * grow_wide)),
            label_id,
        )
        paint(
            ellipsoid(
                (sign * (31.0 + push[side] / 2), -14.0, -10.0), (3.5 * grow_wide, 14.0 * grow_long, 3.5 * grow_wide)
            ),
            5 if sign < 0 else 44,
        )
    paint(ellipsoid((0.0, -8.0, 2.0), (1.8 * grow_wide, 12.0 * grow_long, 7.0 * grow_wide)), 14)
    paint(ellipsoid((0.0, -33.0, -34.0), (5.0 * grow_wide**0.5, 3.5 * grow_wide**0.5, 5.0 * grow_wide**0.5)), 15)
    return labels


#: Parts of a case with their own random stream, so that e.g. overriding the enlargement
#: never changes the image rendering.
ANATOMY_PART, APPEARANCE_PART = 0, 1


def subject_rng(seed: int, stream: int, index: int, part: int = ANATOMY_PART) -> np.random.Generator:
    """Independent random stream for one ``part`` of case ``index`` of dataset ``stream`` (0 brains, 1 tumours)."""
    return np.random.default_rng([int(seed), int(stream), int(index), int(part)])


def generate_label_map(
    grid: Grid,
    seed: int,
    index: int,
    enlargement: float | None = None,
    enlargement_range: tuple[float, float] = DEFAULT_ENLARGEMENT_RANGE,
    stream: int = 0,
) -> tuple[np.ndarray, SubjectDraws]:
    """Label map of subject ``index`` of a dataset drawn with ``seed``.

    Args:
        grid: the voxel grid.
        seed: dataset seed; the same ``(seed, stream, index)`` always gives the same subject.
        index: subject number.
        enlargement: overrides the drawn ventricle enlargement (every other draw unchanged).
        enlargement_range: range of the drawn enlargement.
        stream: dataset stream (see :func:`subject_rng`).

    Returns:
        ``(labels (X, Y, Z) int16, draws)``; ``draws.enlargement`` is the one used.
    """
    draws = draw_subject(subject_rng(seed, stream, index), enlargement_range)
    if enlargement is not None:
        if not enlargement > 0:
            raise ValueError(f"enlargement must be positive, got {enlargement}")
        draws = SubjectDraws(**{**draws.__dict__, "enlargement": float(enlargement)})
    return render_label_map(grid, draws), draws
