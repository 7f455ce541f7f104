"""Statistics of segmentation studies: bootstrap confidence intervals and paired comparisons.

Every variant of a study is evaluated on the same hold-out cases, so each variant is compared
with the reference (``real``) case by case: the paired difference ``variant - reference`` of a
metric, its mean with a bootstrap confidence interval, and the Wilcoxon signed-rank p-value
(scipy). The answer table of a report names, per metric, the variant with the best mean and
its interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shared.io import InputError

#: Metrics compared, and whether larger is better.
COMPARED_METRICS: dict[str, bool] = {"dice": True, "iou": True, "abs_volume_error_ml": False}


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (``(nan, nan)`` for fewer than 2).

    A constant sample gives the degenerate interval ``(value, value)``.
    """
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=np.float64)
    if not 0 < confidence < 1:
        raise InputError(f"confidence: must lie in (0, 1), got {confidence}")
    if data.size < 2:
        return float("nan"), float("nan")
    if np.ptp(data) == 0:
        return float(data[0]), float(data[0])
    result = bootstrap(
        (data,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
        random_state=np.random.default_rng(seed),
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (1.0 when all are zero)."""
    from scipy.stats import wilcoxon

    data = np.asarray(differences, dtype=np.float64)
    if data.size == 0 or not np.any(data != 0):
        return 1.0
    return float(wilcoxon(data).pvalue)


def paired_comparison(
    variant: Sequence[float], reference: Sequence[float], confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """``variant - reference`` case by case: mean, bootstrap CI, Wilcoxon p, n."""
    a, b = np.asarray(variant, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"paired comparison: {a.size} values against {b.size}; the cases must be the same")
    difference = a - b
    low, high = bootstrap_ci(difference, confidence, seed=seed)
    return {
        "n": int(difference.size),
        "mean_difference": float(difference.mean()) if difference.size else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "wilcoxon_p": wilcoxon_p(difference),
    }


def _values_by_case(rows: Sequence[Mapping[str, Any]], model: str, metric: str) -> dict[str, float]:
    return {str(r["case"]): float(r[metric]) for r in rows if r["model"] == model}


def compare_variants(
    per_case: Sequence[Mapping[str, Any]], reference: str = "real", confidence: float = 0.95, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per variant and metric: mean with CI, and the paired difference against ``reference``.

    ``per_case``: rows with ``model``, ``case`` and the :data:`COMPARED_METRICS` (several seeds
    of a variant may share a model name only if their cases are named apart).
    """
    models = list(dict.fromkeys(str(r["model"]) for r in per_case))
    if reference not in models:
        raise InputError(f"reference variant '{reference}' is not among the evaluated models {models}")
    rows = []
    for metric in COMPARED_METRICS:
        ref = _values_by_case(per_case, reference, metric)
        for model in models:
            values = _values_by_case(per_case, model, metric)
            cases = sorted(set(values) & set(ref))
            low, high = bootstrap_ci(list(values.values()), confidence, seed=seed)
            row: dict[str, Any] = {
                "model": model, "metric": metric, "n": len(values),
                "mean": float(np.mean(list(values.values()))), "ci_low": low, "ci_high": high,
            }  # fmt: skip
            if model != reference:
                paired = paired_comparison([values[c] for c in cases], [ref[c] for c in cases], confidence, seed)
                row.update({f"vs_{reference}_{k}": v for k, v in paired.items() if k != "n"})
            rows.append(row)
    return rows


def best_by_metric(comparison: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per metric, the row of the variant with the best mean (ties: the first listed)."""
    best = []
    for metric, larger_is_better in COMPARED_METRICS.items():
        rows = [r for r in comparison if r["metric"] == metric]
        if rows:
            best.append(max(rows, key=lambda r: r["mean"] if larger_is_better else -r["mean"]))
    return best


def mean_over_seeds(per_case: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of several seeds (same ``model`` and ``case``) averaged into one row per model and case.

    Only ``model``, ``case`` and the :data:`COMPARED_METRICS` are kept; the paired comparison of
    :func:`compare_variants` then pairs cases, not (case, seed) draws.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in per_case:
        groups.setdefault((str(row["model"]), str(row["case"])), []).append(row)
    return [
        {"model": model, "case": case, **{m: float(np.mean([float(r[m]) for r in rows])) for m in COMPARED_METRICS}}
        for (model, case), rows in groups.items()
    ]
