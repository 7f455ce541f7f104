"""Study statistics against scipy on fixed inputs: bootstrap CI, paired differences, Wilcoxon, the answer table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from shared.io import InputError
from shared.workflow.study_statistics import (
    best_by_metric,
    bootstrap_ci,
    compare_variants,
    paired_comparison,
    wilcoxon_p,
)

VALUES = [0.61, 0.72, 0.55, 0.80, 0.68, 0.74, 0.59, 0.77]


def test_bootstrap_ci_is_scipys_percentile_interval():
    low, high = bootstrap_ci(VALUES, 0.95, n_resamples=2000, seed=3)
    expected = stats.bootstrap(
        (np.array(VALUES),), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
        random_state=np.random.default_rng(3),
    ).confidence_interval  # fmt: skip
    assert (low, high) == pytest.approx((expected.low, expected.high))
    assert low < np.mean(VALUES) < high
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert all(np.isnan(bootstrap_ci([0.4])))
    with pytest.raises(InputError, match="confidence"):
        bootstrap_ci(VALUES, 1.5)


def test_paired_comparison_and_wilcoxon_match_scipy():
    reference = [v - d for v, d in zip(VALUES, [0.05, 0.02, 0.08, -0.01, 0.04, 0.03, 0.06, 0.01])]
    result = paired_comparison(VALUES, reference, seed=1)
    differences = np.array(VALUES) - np.array(reference)
    assert result["n"] == 8 and result["mean_difference"] == pytest.approx(differences.mean())
    assert result["wilcoxon_p"] == pytest.approx(stats.wilcoxon(differences).pvalue)
    assert result["ci_low"] < differences.mean() < result["ci_high"]
    assert wilcoxon_p([0.0, 0.0]) == 1.0
    with pytest.raises(InputError, match="the cases must be the same"):
        paired_comparison([1.0, 2.0], [1.0])


def test_compare_variants_pairs_cases_by_name_and_names_the_best():
    rows = []
    for i, value in enumerate(VALUES):
        rows.append({"model": "real", "case": f"c{i}", "dice": value, "iou": value / 2, "abs_volume_error_ml": 10 - i})
        rows.append({"model": "augmented", "case": f"c{i}", "dice": value + 0.1, "iou": value / 2 + 0.05,
                     "abs_volume_error_ml": 12 - i})  # fmt: skip
    comparison = compare_variants(rows[::-1])  # order of rows does not matter: cases are matched by name
    augmented_dice = next(r for r in comparison if r["model"] == "augmented" and r["metric"] == "dice")
    assert augmented_dice["vs_real_mean_difference"] == pytest.approx(0.1)
    assert augmented_dice["vs_real_wilcoxon_p"] == pytest.approx(stats.wilcoxon(np.full(8, 0.1)).pvalue)
    best = {r["metric"]: r["model"] for r in best_by_metric(comparison)}
    assert best == {"dice": "augmented", "iou": "augmented", "abs_volume_error_ml": "real"}
    with pytest.raises(InputError, match="reference variant 'real'"):
        compare_variants([r for r in rows if r["model"] != "real"])
