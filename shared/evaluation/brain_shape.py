"""Does a generated image hold a brain? Its intensity brain mask and its slice-to-slice jumps, against real images.

A generated MR image can follow its mask or label map and still not be a brain: a grey field
with a bright blob, or slices that do not agree with their neighbours (horizontal streaks in
the coronal and sagittal views). Three measurements catch them, from the image alone:

- :func:`brain_mask`: the image mapped to [0, 1] by its 0.5 / 99.5 percentiles, thresholded by
  Otsu's method, its largest 26-connected piece with holes filled. Its volume (mL) must lie in
  the range real images give (a field without a brain gives almost the whole field of view, or
  almost nothing).
- :func:`slice_jump`: the largest mean absolute intensity difference between neighbouring
  axial slices inside that mask, on the same [0, 1] scale; a streak is a slice unlike its
  neighbours.
- :func:`background_ratio`: the median intensity of the field of view's in-plane border (its
  outer two voxels in x and y) over the median inside the brain mask. A real brain lies on a
  dark background (about 0.02-0.05 in the demo data); a grey field with a bright blob gives
  0.1-0.5, though its Otsu mask can have a brain's volume.

:func:`brain_reference` fits the accepted ranges on real images (their minimum and maximum,
widened by a tolerance); :func:`check_brain` says what a generated image breaks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from shared.evaluation.fidelity import percentiles_to_unit
from shared.io import InputError


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Boolean ``(X, Y, Z)`` brain mask of an MR image from its intensities (see the module docstring)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    scaled = percentiles_to_unit(np.asarray(image, dtype=np.float32))
    if float(scaled.max()) <= float(scaled.min()):
        return np.zeros(scaled.shape, dtype=bool)
    mask = scaled > threshold_otsu(scaled)
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return mask
    largest = labelled == (np.argmax(np.bincount(labelled.ravel())[1:]) + 1)
    return ndimage.binary_fill_holes(largest)


def background_ratio(image: np.ndarray, mask: np.ndarray, border: int = 2) -> float:
    """Median of the ``border``-voxel in-plane border of an ``(X, Y, Z)`` image over its median inside ``mask``.

    Both medians on the [0, 1] scale of :func:`brain_mask`; ``inf`` when the mask is empty or dark.
    """
    scaled = percentiles_to_unit(np.asarray(image, dtype=np.float32))
    shell = np.zeros(scaled.shape, dtype=bool)
    shell[:border], shell[-border:], shell[:, :border], shell[:, -border:] = True, True, True, True
    inside = float(np.median(scaled[mask])) if mask.any() else 0.0
    return float(np.median(scaled[shell])) / inside if inside > 0 else float("inf")


def slice_jump(image: np.ndarray, mask: np.ndarray) -> float:
    """Largest mean ``|I(z+1) - I(z)|`` over neighbouring axial slices, inside ``mask`` (image on [0, 1])."""
    scaled = percentiles_to_unit(np.asarray(image, dtype=np.float32))
    inside = mask[..., 1:] & mask[..., :-1]
    jumps = [
        float(np.abs(scaled[..., z + 1] - scaled[..., z])[inside[..., z]].mean())
        for z in range(inside.shape[-1])
        if inside[..., z].sum() >= 10
    ]
    return max(jumps, default=0.0)


@dataclass(frozen=True)
class BrainShape:
    """The three measurements of one image.

    Attributes:
        brain_ml: volume of :func:`brain_mask` (mL).
        slice_jump: :func:`slice_jump` of the image.
        background: :func:`background_ratio` of the image.
    """

    brain_ml: float
    slice_jump: float
    background: float


def measure_brain(image: np.ndarray, voxel_ml: float) -> BrainShape:
    """:class:`BrainShape` of an image whose voxels hold ``voxel_ml`` mL each."""
    mask = brain_mask(image)
    return BrainShape(float(mask.sum()) * float(voxel_ml), slice_jump(image, mask), background_ratio(image, mask))


@dataclass(frozen=True)
class BrainReference:
    """What real images show: the accepted brain volume range, the largest accepted slice jump and background.

    Attributes:
        brain_ml_range: ``(low, high)`` mL.
        max_slice_jump: the largest accepted :func:`slice_jump`.
        max_background: the largest accepted :func:`background_ratio`.
    """

    brain_ml_range: tuple[float, float]
    max_slice_jump: float
    max_background: float = float("inf")


#: The smallest accepted background ratio. Skull-stripped or zero-padded real images (BraTS, a
#: FreeSurfer T1, any image padded onto a working grid) have a border of exact zeros: a ratio of 0,
#: against which every generated image, whose border holds a little noise (0.01-0.06), would fail.
#: 0.06 lies below the smallest reference the demo data gives (0.067 for its tumour FLAIRs, 0.090 for
#: its brains), so it loosens nothing there; grey fields without a brain give 0.1-0.5.
BACKGROUND_FLOOR = 0.06


def brain_reference(
    shapes: Iterable[BrainShape],
    volume_tolerance: tuple[float, float] = (0.8, 1.25),
    jump_tolerance: float = 1.5,
    background_tolerance: float = 2.0,
) -> BrainReference:
    """The accepted ranges from real images: their brain volumes' min and max times ``volume_tolerance``,
    their largest slice jump times ``jump_tolerance``, their largest background ratio times
    ``background_tolerance`` (2: the previous slice-LDM starter's images, grey fields, lie at 2.6-14x
    the demo's real largest; the current starter's median at 1.2x), and never below
    :data:`BACKGROUND_FLOOR`.

    Raises:
        InputError: no real image, or tolerances that do not widen the range.
    """
    shapes = list(shapes)
    if not shapes:
        raise InputError("brain reference: no real image to measure")
    low, high = volume_tolerance
    if not 0 < low <= 1 <= high or jump_tolerance < 1 or background_tolerance < 1:
        raise InputError(
            "brain reference: tolerances must widen the real range, got "
            f"{volume_tolerance}, {jump_tolerance}, {background_tolerance}"
        )
    volumes = [s.brain_ml for s in shapes]
    return BrainReference(
        (low * min(volumes), high * max(volumes)),
        jump_tolerance * max(s.slice_jump for s in shapes),
        max(background_tolerance * max(s.background for s in shapes), BACKGROUND_FLOOR),
    )


def check_brain(shape: BrainShape, reference: BrainReference) -> list[str]:
    """Reasons a generated image fails the brain check (empty: it passes)."""
    reasons = []
    low, high = reference.brain_ml_range
    if not low <= shape.brain_ml <= high:
        reasons.append(f"no brain shape (brain {shape.brain_ml:.0f} mL outside {low:.0f}-{high:.0f})")
    if shape.slice_jump > reference.max_slice_jump:
        reasons.append(f"slice jump {shape.slice_jump:.3f} above real {reference.max_slice_jump:.3f}")
    if shape.background > reference.max_background:
        reasons.append(
            f"no dark background (border / brain intensity {shape.background:.2f} "
            f"above real {reference.max_background:.2f})"
        )
    return reasons
