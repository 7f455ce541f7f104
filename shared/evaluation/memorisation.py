"""Memorisation audit: is a generated sample nearer a training case than training cases are to each other?

Synthetic data promises its users that it does not hand out the subjects it learnt from. For every
generated sample this finds its nearest training case three ways:

- **image**: the highest Pearson correlation of the two images' voxels;
- **label**: the highest Dice of the two foreground masks (tumour, or ventricles);
- **features**: the smallest Euclidean distance of their feature vectors (standardised on the
  training cases).

The same is measured between distinct training cases (each against its nearest other one): the
real-real nearest-neighbour distribution. A sample is **flagged** when, on any of the three, it lies
nearer its neighbour than the closest real-real pair does: nearer than two different real subjects
ever are. A flag is not proof of a copy, but an unflagged sample is no nearer any training subject
than the training subjects are to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shared.io import InputError


def _correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``a`` ``(n, v)`` with every row of ``b`` ``(m, v)``: ``(n, m)``."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def _dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dice of every boolean row of ``a`` ``(n, v)`` with every row of ``b`` ``(m, v)``: ``(n, m)`` (empty pairs: 0)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    overlap = a @ b.T
    sizes = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :]
    return np.where(sizes > 0, 2 * overlap / np.maximum(sizes, 1e-12), 0.0)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2), 0.0))


@dataclass(frozen=True)
class Neighbour:
    """A sample's nearest training case, three ways (indices into the training cases)."""

    image_case: int
    image_correlation: float
    label_case: int
    label_dice: float
    feature_case: int
    feature_distance: float


@dataclass(frozen=True)
class Audit:
    """The audit of a generated set.

    Attributes:
        generated: each sample's :class:`Neighbour`.
        real: each training case's nearest *other* training case.
        closest_real: the closest real-real pair on each measure: highest correlation, highest
            Dice, smallest feature distance.
        flags: per sample, the measures on which it is nearer than ``closest_real`` (empty: not flagged).
    """

    generated: tuple[Neighbour, ...]
    real: tuple[Neighbour, ...]
    closest_real: dict[str, float]
    flags: tuple[tuple[str, ...], ...]

    def rows(self, names: Sequence[str], training_names: Sequence[str]) -> list[dict[str, Any]]:
        """One row per generated sample, named, with its neighbours' names and its flags."""
        rows = []
        for name, near, flags in zip(names, self.generated, self.flags):
            row = asdict(near)
            for key in ("image_case", "label_case", "feature_case"):
                row[key] = training_names[row[key]]
            rows.append({"sample": name, **row, "flagged": "; ".join(flags)})
        return rows

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float]:
            return {"median": float(np.median(values)), "max": float(np.max(values)), "min": float(np.min(values))}

        return {
            "samples": len(self.generated), "flagged": sum(bool(f) for f in self.flags),
            "closest_real": self.closest_real,
            "generated_image_correlation": stats([n.image_correlation for n in self.generated]),
            "real_image_correlation": stats([n.image_correlation for n in self.real]),
            "generated_label_dice": stats([n.label_dice for n in self.generated]),
            "real_label_dice": stats([n.label_dice for n in self.real]),
            "generated_feature_distance": stats([n.feature_distance for n in self.generated]),
            "real_feature_distance": stats([n.feature_distance for n in self.real]),
        }  # fmt: skip


def _neighbours(corr: np.ndarray, dice: np.ndarray, dist: np.ndarray) -> list[Neighbour]:
    out = []
    for i in range(corr.shape[0]):
        c, d, f = int(np.argmax(corr[i])), int(np.argmax(dice[i])), int(np.argmin(dist[i]))
        out.append(Neighbour(c, float(corr[i, c]), d, float(dice[i, d]), f, float(dist[i, f])))
    return out


def audit(
    generated_images: Sequence[np.ndarray],
    generated_masks: Sequence[np.ndarray],
    generated_features: np.ndarray,
    training_images: Sequence[np.ndarray],
    training_masks: Sequence[np.ndarray],
    training_features: np.ndarray,
) -> Audit:
    """The :class:`Audit` of generated samples against the training cases their generators learnt from.

    Args:
        generated_images, training_images: volumes on one grid.
        generated_masks, training_masks: their foreground masks (boolean, same grid).
        generated_features, training_features: ``(n, d)`` and ``(m, d)`` feature vectors.

    Raises:
        InputError: fewer than 2 training cases, or volumes or features that do not match.
    """
    if len(training_images) < 2:
        raise InputError(f"memorisation audit: need at least 2 training cases, got {len(training_images)}")
    shapes = {np.shape(v) for v in (*generated_images, *training_images, *generated_masks, *training_masks)}
    if len(shapes) != 1:
        raise InputError(f"memorisation audit: volumes of different shapes {sorted(shapes)}")
    gi = np.stack([np.ravel(v) for v in generated_images]).astype(np.float64)
    ti = np.stack([np.ravel(v) for v in training_images]).astype(np.float64)
    gm = np.stack([np.ravel(v) > 0 for v in generated_masks])
    tm = np.stack([np.ravel(v) > 0 for v in training_masks])
    mean, sd = training_features.mean(axis=0), training_features.std(axis=0) + 1e-12
    gf, tf = (generated_features - mean) / sd, (training_features - mean) / sd
    generated = _neighbours(_correlations(gi, ti), _dice(gm, tm), _distances(gf, tf))
    corr, dice, dist = _correlations(ti, ti), _dice(tm, tm), _distances(tf, tf)
    np.fill_diagonal(corr, -np.inf)
    np.fill_diagonal(dice, -np.inf)
    np.fill_diagonal(dist, np.inf)
    real = _neighbours(corr, dice, dist)
    closest = {
        "image_correlation": max(n.image_correlation for n in real),
        "label_dice": max(n.label_dice for n in real),
        "feature_distance": min(n.feature_distance for n in real),
    }
    flags = []
    for near in generated:
        flag = []
        if near.image_correlation > closest["image_correlation"]:
            flag.append(f"image correlation {near.image_correlation:.3f} > {closest['image_correlation']:.3f}")
        if near.label_dice > closest["label_dice"]:
            flag.append(f"label Dice {near.label_dice:.3f} > {closest['label_dice']:.3f}")
        if near.feature_distance < closest["feature_distance"]:
            flag.append(f"feature distance {near.feature_distance:.2f} < {closest['feature_distance']:.2f}")
        flags.append(tuple(flag))
    return Audit(tuple(generated), tuple(real), closest, tuple(flags))
