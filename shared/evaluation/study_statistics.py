"""Statistics of segmentation studies, with the seeds' variance in every interval.

Each variant of a study is a set of nnU-Net models (one per seed) evaluated on the same hold-out
cases: a ``seeds x cases`` table per variant and metric. A model trained again with another seed
scores differently, so an interval over cases alone overstates what a study shows.

- :func:`hierarchical_means`: the **hierarchical bootstrap**. Each resample draws the cases
  with replacement, and, for every variant on its own, its seeds with replacement; the
  statistic is the mean over the drawn seeds and cases. Intervals are percentile intervals of
  it. Paired differences between two variants share the case draw (the same hold-out case for
  both) and draw their seeds independently (two trainings with seed ``k`` are not paired).
- Two-sided bootstrap p-values of a difference (twice the smaller tail beyond 0), adjusted
  across the variants compared with one reference by **Holm's** step-down method
  (:func:`holm`).
- The seed-to-seed SD of a variant: the sample SD of its per-seed means over the cases.

With one seed the hierarchical bootstrap is the ordinary case bootstrap, and no seed variance
is estimated. With few seeds the seed draw is coarse: 3 seeds give 10 distinct draws, and the
bootstrap's seed variance is ``(n - 1) / n`` of the sample's, a third too small with 3 seeds, so
intervals still understate the seeds' part. They are at least as wide as the case bootstrap's,
usually wider (a test checks this on a table with known seed variance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shared.io import InputError

#: Metrics compared, and whether larger is better.
COMPARED_METRICS: dict[str, bool] = {"dice": True, "iou": True, "abs_volume_error_ml": False}

DEFAULT_RESAMPLES = 10_000
#: Subsets of fewer cases get their means only: an interval over a handful of cases says nothing.
MIN_CASES = 5


def seed_case_table(rows: Sequence[Mapping[str, Any]], model: str, metric: str, cases: Sequence[str]) -> np.ndarray:
    """``(seeds, cases)`` array of ``metric`` for ``model`` (rows with ``model``, ``seed``, ``case``).

    Raises:
        InputError: a seed of the model lacks one of ``cases``.
    """
    by_seed: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["model"] == model:
            by_seed.setdefault(str(row.get("seed", 0)), {})[str(row["case"])] = float(row[metric])
    if not by_seed:
        raise InputError(f"model '{model}': no evaluated cases")
    table = []
    for seed, values in sorted(by_seed.items()):
        missing = [c for c in cases if c not in values]
        if missing:
            raise InputError(f"model '{model}', seed {seed}: no result for case {missing[0]}")
        table.append([values[c] for c in cases])
    return np.asarray(table, dtype=np.float64)


def _draws(rng: np.random.Generator, n_resamples: int, size: int) -> np.ndarray:
    return rng.integers(0, size, size=(n_resamples, size))


def hierarchical_means(table: np.ndarray, case_draws: np.ndarray, seed_draws: np.ndarray) -> np.ndarray:
    """Bootstrap means of a ``(seeds, cases)`` table for given case and seed draws (``(B, C)``, ``(B, S)``)."""
    by_seed = table[seed_draws]  # (B, S, C)
    picked = np.take_along_axis(by_seed, case_draws[:, None, :].repeat(table.shape[0], axis=1), axis=2)
    return picked.mean(axis=(1, 2))


def interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap samples."""
    if not 0 < confidence < 1:
        raise InputError(f"confidence: must lie in (0, 1), got {confidence}")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of ``H0: difference = 0`` (twice the smaller tail; 1.0 if all are 0)."""
    if not np.any(differences != 0):
        return 1.0
    below, above = np.sum(differences <= 0), np.sum(differences >= 0)
    return float(min(1.0, 2 * (min(below, above) + 1) / (differences.size + 1)))


def hierarchical_ci(
    table: np.ndarray, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Hierarchical bootstrap interval of a ``(seeds, cases)`` table's mean."""
    rng = np.random.default_rng(seed)
    cases = _draws(rng, n_resamples, table.shape[1])
    seeds = _draws(rng, n_resamples, table.shape[0])
    return interval(hierarchical_means(table, cases, seeds), confidence)


def case_bootstrap_ci(
    table: np.ndarray, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval over cases only, of the per-case means over seeds (what ignores the seeds)."""
    rng = np.random.default_rng(seed)
    per_case = table.mean(axis=0)
    cases = _draws(rng, n_resamples, per_case.size)
    return interval(per_case[cases].mean(axis=1), confidence)


def hierarchical_difference(
    a: np.ndarray, b: np.ndarray, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, float]:
    """``mean(a) - mean(b)`` of two ``(seeds, cases)`` tables on the same cases: difference, interval, p."""
    if a.shape[1] != b.shape[1]:
        raise InputError(f"paired comparison: {a.shape[1]} cases against {b.shape[1]}; the cases must be the same")
    rng = np.random.default_rng(seed)
    cases = _draws(rng, n_resamples, a.shape[1])
    samples = hierarchical_means(a, cases, _draws(rng, n_resamples, a.shape[0])) - hierarchical_means(
        b, cases, _draws(rng, n_resamples, b.shape[0])
    )
    low, high = interval(samples, confidence)
    return {"difference": float(a.mean() - b.mean()), "ci_low": low, "ci_high": high, "p": bootstrap_p(samples)}


def seed_sd(table: np.ndarray) -> float:
    """Sample SD of the per-seed means over the cases (``nan`` with one seed)."""
    means = table.mean(axis=1)
    return float(means.std(ddof=1)) if means.size > 1 else float("nan")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (same order as given)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (p.size - rank) * p[index])
        adjusted[index] = min(1.0, running)
    return [float(v) for v in adjusted]


#: Verdicts of :func:`verdict`.
BETTER, WORSE, NOT_SHOWN, NOT_AFTER_HOLM = "better", "worse", "no difference shown", "not shown after Holm's correction"


def verdict(row: Mapping[str, Any], reference: str, larger_is_better: bool = True, alpha: float = 0.05) -> str:
    """Whether ``row``'s variant differs from ``reference``: only when the 95 % interval of the difference
    excludes 0 *and* the Holm-adjusted p is below ``alpha`` (the interval alone ignores how many
    variants were compared)."""
    low, high, p = (row.get(f"vs_{reference}_{key}") for key in ("ci_low", "ci_high", "p_holm"))
    if low in (None, "") or high in (None, ""):
        return NOT_SHOWN
    low, high = float(low), float(high)
    if not (low > 0 or high < 0):
        return NOT_SHOWN
    if p in (None, "") or float(p) >= alpha:
        return NOT_AFTER_HOLM
    return BETTER if (low > 0) == larger_is_better else WORSE


def compare_variants(
    per_case: Sequence[Mapping[str, Any]],
    references: Sequence[str] = ("real",),
    subsets: Mapping[str, Sequence[str]] | None = None,
    aliases: Mapping[str, str] | None = None,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    min_cases: int = MIN_CASES,
) -> list[dict[str, Any]]:
    """One row per variant, metric and subset of cases: mean, seed SD, hierarchical interval, and
    the difference against each reference with its interval, bootstrap p and Holm-adjusted p.

    Args:
        per_case: rows with ``model``, ``seed`` (optional), ``case`` and :data:`COMPARED_METRICS`.
        references: variants to compare against (``real``, ``pool``).
        subsets: ``{name: case names}`` (e.g. ``all``, ``inside``, ``beyond``); default all cases.
        aliases: variants that are another's models (``{"pool": "real"}``): compared through their
            twin, not listed as rows of their own, and left out of Holm's families.
        confidence, n_resamples, seed: of the bootstrap.
        min_cases: a subset of fewer cases gets means and seed SDs only (no interval, no comparison).

    Holm's family: the variants compared with one reference, per metric and subset.
    """
    aliases = dict(aliases or {})
    models = [m for m in dict.fromkeys(str(r["model"]) for r in per_case) if m not in aliases]
    for reference in references:
        if aliases.get(reference, reference) not in models:
            raise InputError(f"reference variant '{reference}' is not among the evaluated models {models}")
    all_cases = list(dict.fromkeys(str(r["case"]) for r in per_case))
    subsets = dict(subsets) if subsets else {"all": all_cases}
    rows: list[dict[str, Any]] = []
    for metric in COMPARED_METRICS:
        for subset, cases in subsets.items():
            cases = [c for c in all_cases if c in set(cases)]
            if not cases:
                continue
            tables = {m: seed_case_table(per_case, m, metric, cases) for m in models}
            block = []
            for model in models:
                table = tables[model]
                low, high = hierarchical_ci(table, confidence, n_resamples, seed)
                row: dict[str, Any] = {
                    "model": model, "metric": metric, "subset": subset, "n_cases": len(cases),
                    "n_seeds": table.shape[0], "mean": float(table.mean()), "seed_sd": seed_sd(table),
                    "ci_low": low, "ci_high": high,
                }  # fmt: skip
                block.append(row)
                if len(cases) < min_cases:
                    row["ci_low"] = row["ci_high"] = float("nan")
                    continue
                for reference in references:
                    twin = aliases.get(reference, reference)
                    if model == twin:
                        continue
                    result = hierarchical_difference(table, tables[twin], confidence, n_resamples, seed)
                    row.update({f"vs_{reference}_{key}": value for key, value in result.items()})
            for reference in references:
                family = [row for row in block if f"vs_{reference}_p" in row]
                for row, adjusted in zip(family, holm([row[f"vs_{reference}_p"] for row in family])):
                    row[f"vs_{reference}_p_holm"] = adjusted
            rows += block
    return rows
