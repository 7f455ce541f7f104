"""Study statistics: the hierarchical bootstrap over seeds and cases, bootstrap p, Holm, the verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from shared.evaluation.study_statistics import (
    BETTER,
    NOT_AFTER_HOLM,
    NOT_SHOWN,
    WORSE,
    bootstrap_p,
    case_bootstrap_ci,
    compare_variants,
    hierarchical_ci,
    hierarchical_difference,
    holm,
    seed_sd,
    verdict,
)
from shared.io import InputError


def _toy(seed_offsets: list[float], n_cases: int = 24, case_sd: float = 0.05, noise: float = 0.005) -> np.ndarray:
    """``(seeds, cases)``: shared case effects, one offset per seed (the seed variance), small noise."""
    rng = np.random.default_rng(1)
    cases = rng.normal(0.8, case_sd, n_cases)
    return np.stack([cases + offset for offset in seed_offsets]) + rng.normal(0, noise, (len(seed_offsets), n_cases))


def test_hierarchical_interval_includes_the_seed_variance_the_case_bootstrap_leaves_out():
    varied = _toy([-0.05, 0.0, 0.05])
    low, high = hierarchical_ci(varied)
    case_low, case_high = case_bootstrap_ci(varied)
    assert low < varied.mean() < high
    assert high - low > 1.5 * (case_high - case_low)  # the seeds' SD (0.05) is as large as the cases' SD
    assert seed_sd(varied) == pytest.approx(0.05, abs=0.005)
    # without seed variance the two agree (to bootstrap noise)
    same = _toy([0.0, 0.0, 0.0], noise=0.0)
    assert np.diff(hierarchical_ci(same)) == pytest.approx(np.diff(case_bootstrap_ci(same)), rel=0.1)
    assert np.isnan(seed_sd(same[:1]))


def test_paired_difference_shares_the_cases_and_draws_each_variants_seeds_on_its_own():
    base = _toy([-0.05, 0.0, 0.05])
    shifted = base + 0.02
    result = hierarchical_difference(shifted, base)
    assert result["difference"] == pytest.approx(0.02)
    assert result["ci_low"] < 0 < result["ci_high"]  # seed variance of both trainings hides a 0.02 shift
    steady = _toy([0.0, 0.0, 0.0])
    clear = hierarchical_difference(steady + 0.02, steady)
    assert clear["ci_low"] > 0 and clear["p"] < 0.001  # the same shift is clear when seeds agree
    with pytest.raises(InputError, match="the cases must be the same"):
        hierarchical_difference(base, base[:, :5])


def test_bootstrap_p_and_holm():
    assert bootstrap_p(np.zeros(100)) == 1.0
    assert bootstrap_p(np.full(999, 0.1)) == pytest.approx(2 / 1000)
    assert bootstrap_p(np.r_[np.full(900, 0.1), np.full(100, -0.1)]) == pytest.approx(2 * 101 / 1001)
    # Holm: sorted p times (m - rank), made monotone, capped at 1, returned in the given order
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_compare_variants_gives_every_variant_against_each_reference_with_holm_per_family():
    rows = []
    for seed, offset in enumerate((-0.01, 0.0, 0.01)):
        for case in range(12):
            for model, shift in (("real", 0.0), ("pool", 0.05), ("augmented", 0.06), ("synthetic", -0.3)):
                value = 0.7 + 0.01 * case + offset + shift
                rows.append({"model": model, "seed": seed, "case": f"c{case}", "dice": value, "iou": value - 0.1,
                             "abs_volume_error_ml": 5 - 10 * shift})  # fmt: skip
    subsets = {"all": [f"c{i}" for i in range(12)], "inside": [f"c{i}" for i in range(6)],
               "beyond": [f"c{i}" for i in range(6, 12)]}  # fmt: skip
    comparison = compare_variants(rows[::-1], ("real", "pool"), subsets, n_resamples=2000)
    by = {(r["model"], r["metric"], r["subset"]): r for r in comparison}
    augmented = by[("augmented", "dice", "all")]
    assert augmented["vs_real_difference"] == pytest.approx(0.06) and augmented["vs_pool_difference"] == pytest.approx(
        0.01
    )
    assert augmented["n_seeds"] == 3 and augmented["n_cases"] == 12 and augmented["seed_sd"] == pytest.approx(0.01)
    assert (
        "vs_real_difference" not in by[("real", "dice", "all")]
        and "vs_pool_difference" not in by[("pool", "dice", "all")]
    )
    family = [by[(m, "dice", "beyond")] for m in ("pool", "augmented", "synthetic")]
    assert [r["vs_real_p_holm"] for r in family] == pytest.approx(holm([r["vs_real_p"] for r in family]))
    assert verdict(augmented, "real") == BETTER and verdict(by[("synthetic", "dice", "all")], "real") == WORSE
    assert verdict(by[("augmented", "abs_volume_error_ml", "all")], "real", larger_is_better=False) == BETTER
    aliased = compare_variants([r for r in rows if r["model"] != "pool"], ("real", "pool"), aliases={"pool": "real"},
                               n_resamples=500)  # fmt: skip
    assert {r["model"] for r in aliased} == {"real", "augmented", "synthetic"}
    row = next(r for r in aliased if r["model"] == "augmented" and r["metric"] == "dice")
    assert row["vs_pool_difference"] == row["vs_real_difference"]  # pool is the real set's models
    with pytest.raises(InputError, match="reference variant 'real'"):
        compare_variants([r for r in rows if r["model"] != "real"])


def test_a_verdict_needs_the_interval_to_exclude_zero_and_holms_p_below_005():
    row = {"vs_real_ci_low": 0.01, "vs_real_ci_high": 0.05, "vs_real_p_holm": 0.03}
    assert verdict(row, "real") == BETTER and verdict(row, "real", larger_is_better=False) == WORSE
    assert verdict({**row, "vs_real_p_holm": 0.08}, "real") == NOT_AFTER_HOLM
    assert verdict({**row, "vs_real_ci_low": -0.01}, "real") == NOT_SHOWN
    assert verdict({}, "real") == NOT_SHOWN
