"""FLAIR-like images synthesised from label maps.

Per-label mean intensities (fluid suppressed: CSF and ventricles dark; grey matter a
little brighter than white matter), jittered per subject, with smooth within-tissue
texture, partial-volume blur, a multiplicative bias field and Rician noise. Values are
roughly in ``[0, 1.2]``; background stays near 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from shared.demo.fields import WaveField
from shared.demo.grid import Grid
from shared.labels import FLAIR_MEANS, mean_intensity_map


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
