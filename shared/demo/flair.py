"""FLAIR-like images synthesised from label maps.

Per-label mean intensities (fluid suppressed: CSF and ventricles dark; grey matter a
little brighter than white matter), jittered per subject, with smooth within-tissue
texture, partial-volume blur, a multiplicative bias field and Rician noise. Values are
roughly in ``[0, 1.2]``; background stays near 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import ndimage

from shared.demo.fields import WaveField
from shared.demo.grid import Grid

#: Mean FLAIR intensity per label id (before jitter, bias field and noise).
FLAIR_MEANS: Final[dict[int, float]] = {
    0: 0.0,
    2: 0.55,
    41: 0.55,  # cerebral white matter
    3: 0.68,
    42: 0.68,  # cerebral cortex
    4: 0.06,
    43: 0.06,
    5: 0.07,
    44: 0.07,
    14: 0.06,
    15: 0.07,  # ventricles
    7: 0.52,
    46: 0.52,
    8: 0.70,
    47: 0.70,  # cerebellum white matter / cortex
    10: 0.64,
    49: 0.64,  # thalamus
    11: 0.70,
    50: 0.70,  # caudate
    12: 0.67,
    51: 0.67,  # putamen
    13: 0.58,
    52: 0.58,  # pallidum
    16: 0.57,  # brain stem
    17: 0.76,
    53: 0.76,
    18: 0.74,
    54: 0.74,  # hippocampus, amygdala
    24: 0.09,  # CSF
    26: 0.70,
    58: 0.70,  # accumbens
    28: 0.60,
    60: 0.60,  # ventral DC
}

#: Intensity used for label ids missing from :data:`FLAIR_MEANS` (generic grey matter).
DEFAULT_TISSUE_MEAN: Final[float] = 0.65


@dataclass(frozen=True)
class RenderDraws:
    """Random draws of one rendering: per-label gains, texture, bias field and noise seed."""

    label_gain: dict[int, float]
    texture: WaveField
    bias: WaveField
    noise_seed: int


def draw_rendering(rng: np.random.Generator) -> RenderDraws:
    """Draw the random parts of one image (always the same number of draws)."""
    gains = rng.uniform(0.93, 1.07, size=len(FLAIR_MEANS))
    return RenderDraws(
        label_gain=dict(zip(FLAIR_MEANS, gains.tolist())),
        texture=WaveField.random(rng, 16, (6.0, 20.0), 0.035),
        bias=WaveField.random(rng, 4, (150.0, 400.0), 0.12),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def mean_intensity_map(labels: np.ndarray, gains: dict[int, float] | None = None) -> np.ndarray:
    """Piecewise-constant image ``(X, Y, Z)`` float32 from label ids."""
    lookup_ids = np.unique(labels)
    image = np.zeros(labels.shape, dtype=np.float32)
    for label_id in lookup_ids.tolist():
        mean = FLAIR_MEANS.get(label_id, DEFAULT_TISSUE_MEAN) * (gains or {}).get(label_id, 1.0)
        image[labels == label_id] = mean
    return image


def render_flair(
    labels: np.ndarray,
    grid: Grid,
    draws: RenderDraws,
    extra: np.ndarray | None = None,
    blur_mm: float = 1.0,
    noise_std: float = 0.02,
) -> np.ndarray:
    """FLAIR-like image of a label map.

    Args:
        labels: ``(X, Y, Z)`` FreeSurfer ids.
        grid: the grid the labels live on.
        draws: from :func:`draw_rendering`.
        extra: optional ``(X, Y, Z)`` image that *replaces* tissue intensity where it is
            non-zero (used to paint lesions) before texture, blur, bias and noise.
        blur_mm: partial-volume blur (Gaussian sigma, mm).
        noise_std: standard deviation of the Rician noise.

    Returns:
        ``(X, Y, Z)`` float32 image.
    """
    image = mean_intensity_map(labels, draws.label_gain)
    if extra is not None:
        image = np.where(extra > 0, extra, image).astype(np.float32)
    x, y, z = grid.world_coordinates()
    inside = labels > 0
    image[inside] *= 1.0 + draws.texture(x[inside], y[inside], z[inside])
    sigma = [blur_mm / s for s in grid.spacing]
    image = ndimage.gaussian_filter(image, sigma=sigma)
    image *= np.exp(draws.bias(x, y, z))
    noise = np.random.default_rng(draws.noise_seed).normal(0.0, noise_std, size=(2, *labels.shape)).astype(np.float32)
    return np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2).astype(np.float32)
