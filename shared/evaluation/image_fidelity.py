"""How far generated images lie from real ones, beside how far real images lie from each other.

Distances between two sets of images are taken in the features of a network trained in this
project on real data (:mod:`shared.evaluation.feature_networks`; no weights can be downloaded):

- **Fréchet distance** (MONAI ``FIDMetric``) and **MMD** (MONAI ``MMDMetric``, a linear kernel)
  between feature sets;
- always beside a **real-vs-real baseline**: the real images split into two disjoint halves of
  ``n`` images each, ``n`` also the number of generated images drawn; the generated draw is
  compared with the first half, the second half with the first half. Each of ``resamples`` splits
  gives one pair of distances; the 95 % intervals are percentile intervals over the splits, and
  the ratio generated / real-vs-real is what is judged (a ratio near 1: as far from real images as
  real images are from each other).
- Features are projected, per split, on the first ``components`` principal axes of the reference
  half: with tens of images a Fréchet distance in hundreds of dimensions is mostly the bias of
  rank-deficient covariances.

A set's features are a list with one ``(k, d)`` array per volume (``k = 1`` for whole-volume
features, one row per slice for slice features), so that splits are always by volume.

**Diversity**: the mean pairwise MS-SSIM (MONAI ``MultiScaleSSIMMetric``) among generated images
against the same among as many real ones: a generator that repeats itself scores higher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import torch

from shared.io import InputError

DEFAULT_RESAMPLES = 200


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of two feature sets ``(n, d)`` (MONAI ``FIDMetric``)."""
    from monai.metrics import FIDMetric

    return float(FIDMetric()(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)))


def mmd(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased squared MMD with a linear kernel of two feature sets of equal size (MONAI ``MMDMetric``)."""
    from monai.metrics import MMDMetric

    return float(MMDMetric()(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)))


def _project(reference: np.ndarray, components: int, *others: np.ndarray) -> list[np.ndarray]:
    """``reference`` and ``others`` standardised on ``reference`` (per feature) and projected on its first
    principal axes, so that distances are in units of the reference's own spread."""
    mean, sd = reference.mean(axis=0), reference.std(axis=0) + 1e-12
    standard = (reference - mean) / sd
    _, _, axes = np.linalg.svd(standard, full_matrices=False)
    axes = axes[: min(max(2, min(components, reference.shape[0] - 1)), axes.shape[0])]
    return [((x - mean) / sd) @ axes.T for x in (reference, *others)]


@dataclass(frozen=True)
class Interval:
    """Mean and 95 % percentile interval over the splits."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Interval:
        array = np.asarray(values, dtype=np.float64)
        low, high = np.quantile(array, [0.025, 0.975])
        return cls(float(array.mean()), float(low), float(high))

    def words(self, digits: int = 2) -> str:
        return f"{self.mean:.{digits}f} ({self.low:.{digits}f}, {self.high:.{digits}f})"


@dataclass(frozen=True)
class DistanceComparison:
    """One distance of generated and of real images to real images, over the same splits.

    Attributes:
        metric: ``frechet`` or ``mmd``.
        n: images per set in each split.
        generated: the generated draw against the reference half.
        real: the other real half against the reference half (the real-vs-real baseline).
        judged: generated against real, split by split: their ratio (Fréchet distance) or their
            difference (MMD, which is near 0 and may be negative for sets from one distribution).
        judged_as: ``ratio`` or ``difference``.
    """

    metric: str
    n: int
    generated: Interval
    real: Interval
    judged: Interval
    judged_as: str
    splits: tuple[tuple[float, float], ...] = ()

    def row(self, **extra: Any) -> dict[str, Any]:
        return {
            **extra, "metric": self.metric, "n": self.n,
            "generated": self.generated.mean, "generated_low": self.generated.low,
            "generated_high": self.generated.high,
            "real": self.real.mean, "real_low": self.real.low, "real_high": self.real.high,
            self.judged_as: self.judged.mean, f"{self.judged_as}_low": self.judged.low,
            f"{self.judged_as}_high": self.judged.high,
        }  # fmt: skip


def compare_to_real(
    generated: Sequence[np.ndarray],
    real: Sequence[np.ndarray],
    resamples: int = DEFAULT_RESAMPLES,
    components: int = 16,
    seed: int = 0,
) -> dict[str, DistanceComparison]:
    """Fréchet distance and MMD of ``generated`` to ``real``, beside real-vs-real, over ``resamples`` splits.

    Args:
        generated, real: per volume, a ``(k, d)`` feature array (see the module docstring).
        resamples: random splits of the real volumes into two halves (and draws of the generated ones).
        components: principal axes kept (at most the reference rows minus one).
        seed: of the splits.

    Raises:
        InputError: fewer than 4 real or 2 generated volumes, or features of different widths.
    """
    if len(real) < 4 or len(generated) < 2:
        raise InputError(
            f"fidelity: need at least 4 real and 2 generated volumes, got {len(real)} and {len(generated)}"
        )
    widths = {a.shape[1] for a in (*generated, *real)}
    if len(widths) != 1:
        raise InputError(f"fidelity: features of different widths {sorted(widths)}")
    n = min(len(generated), len(real) // 2)
    rng = np.random.default_rng(seed)
    values: dict[str, dict[str, list[float]]] = {m: {"g": [], "r": []} for m in ("frechet", "mmd")}
    for _ in range(resamples):
        order = rng.permutation(len(real))
        reference = np.concatenate([real[i] for i in order[:n]])
        other = np.concatenate([real[i] for i in order[n : 2 * n]])
        drawn = np.concatenate([generated[i] for i in rng.permutation(len(generated))[:n]])
        reference, other, drawn = _project(reference, components, other, drawn)
        values["frechet"]["g"].append(frechet_distance(drawn, reference))
        values["frechet"]["r"].append(frechet_distance(other, reference))
        size = min(len(reference), len(other), len(drawn))
        values["mmd"]["g"].append(mmd(drawn[:size], reference[:size]))
        values["mmd"]["r"].append(mmd(other[:size], reference[:size]))
    results = {}
    for metric, pair in values.items():
        g, r = np.asarray(pair["g"]), np.asarray(pair["r"])
        if metric == "frechet":
            judged, kind = g / np.maximum(r, 1e-12), "ratio"
        else:
            judged, kind = g - r, "difference"
        results[metric] = DistanceComparison(
            metric, n, Interval.of(g), Interval.of(r), Interval.of(judged), kind, tuple(zip(g.tolist(), r.tolist()))
        )
    return results


def mean_over_planes(per_plane: Sequence[DistanceComparison]) -> DistanceComparison:
    """The 2.5D figure: per split, the mean over planes of each distance (the planes' splits are the same:
    :func:`compare_to_real` with one seed and the same volumes draws them alike)."""
    first = per_plane[0]
    g = np.mean([[pair[0] for pair in c.splits] for c in per_plane], axis=0)
    r = np.mean([[pair[1] for pair in c.splits] for c in per_plane], axis=0)
    judged = g / np.maximum(r, 1e-12) if first.judged_as == "ratio" else g - r
    return DistanceComparison(first.metric, first.n, Interval.of(g), Interval.of(r), Interval.of(judged),
                              first.judged_as, tuple(zip(g.tolist(), r.tolist())))  # fmt: skip


def pairwise_ms_ssim(volumes: Sequence[np.ndarray], max_pairs: int = 300, seed: int = 0) -> tuple[float, float, int]:
    """Mean and SD of MS-SSIM over pairs of volumes (at most ``max_pairs``, drawn at random); and the pair count.

    Volumes are ``(X, Y, Z)`` on [0, 1] (map them first). Three scales and a 5-voxel Gaussian window,
    so that grids of 32 voxels along an axis fit.
    """
    from monai.metrics import MultiScaleSSIMMetric

    pairs = list(combinations(range(len(volumes)), 2))
    if not pairs:
        raise InputError("diversity: need at least 2 volumes")
    rng = np.random.default_rng(seed)
    if len(pairs) > max_pairs:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), max_pairs, replace=False))]
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=5, kernel_sigma=1.0,
                                  weights=(0.3, 0.4, 0.3))  # fmt: skip
    a = torch.stack([torch.as_tensor(volumes[i], dtype=torch.float32)[None] for i, _ in pairs])
    b = torch.stack([torch.as_tensor(volumes[j], dtype=torch.float32)[None] for _, j in pairs])
    values = metric(a, b).flatten().numpy()
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, len(pairs)


def diversity(generated: Sequence[np.ndarray], real: Sequence[np.ndarray], seed: int = 0) -> dict[str, float]:
    """Mean pairwise MS-SSIM of the generated volumes and of as many real ones (drawn at random), and their gap."""
    rng = np.random.default_rng(seed)
    drawn = [real[i] for i in rng.permutation(len(real))[: len(generated)]]
    g_mean, g_sd, g_pairs = pairwise_ms_ssim(generated, seed=seed)
    r_mean, r_sd, r_pairs = pairwise_ms_ssim(drawn, seed=seed)
    return {
        "generated_ms_ssim": g_mean, "generated_sd": g_sd, "generated_pairs": g_pairs,
        "real_ms_ssim": r_mean, "real_sd": r_sd, "real_pairs": r_pairs, "difference": g_mean - r_mean,
    }  # fmt: skip
