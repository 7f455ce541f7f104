"""The report's opening figures: generator quality from the manifests, and the answer table from the comparison."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import save_nifti
from shared.evaluation.study_statistics import compare_variants
from shared.io import write_csv
from shared.workflow.report import answer_lines, generator_figures, generator_lines
from shared.workflow.settings import resolve_settings

AFFINE = np.diag([6.0, 6.0, 6.0, 1.0])


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_generator_figures_separate_the_first_round_from_the_accepted_pairs(tmp_path):
    brain = np.zeros((8, 8, 8), dtype=np.int16)
    brain[1:7, 1:7, 1:7] = 2  # 216 voxels of 0.216 mL: ICV 46.656 mL
    save_nifti(tmp_path / "data" / "brains" / "labels" / "b0.nii.gz", brain, AFFINE)
    rows = [  # round 0: three on target, one far off (rejected); round 1: its replacement
        {"round": 0, "requested_c": 0.1, "ventricle_ml": 10, "icv_ml": 46.656, "qc_status": "accepted"},
        {"round": 0, "requested_c": 0.5, "ventricle_ml": 30, "icv_ml": 46.656, "qc_status": "accepted"},
        {"round": 0, "requested_c": 0.9, "ventricle_ml": 5, "icv_ml": 93.312, "qc_status": "rejected"},
        {"round": 0, "requested_c": 0.7, "ventricle_ml": 40, "icv_ml": 46.656, "qc_status": "accepted"},
        {"round": 1, "requested_c": 0.9, "ventricle_ml": 50, "icv_ml": 46.656, "qc_status": "accepted"},
    ]
    generated = tmp_path / "generated" / "ventricles"
    _write_csv(generated / "manifest.csv", [{"image": "i", "label": "l", **r} for r in rows])
    (generated / "qc.json").write_text(json.dumps({"candidates": 5, "rounds": 2, "rejected": 1,
                                                   "reasons": {"ICV outside range": 1}}))  # fmt: skip
    figures = generator_figures(tmp_path, "ventricles")
    assert figures["raw"]["n"] == 4 and figures["raw"]["rho_c_volume"] == pytest.approx(-0.2)
    assert figures["accepted"]["n"] == 4 and figures["accepted"]["rho_c_volume"] == pytest.approx(1.0)
    assert figures["accepted"]["icv_ratio_median"] == pytest.approx(1.0)
    lines = generator_lines("ventricles", figures)
    assert lines[0].startswith("| ventricles | first round, before QC | 4 | rho(c, ventricle volume) -0.20")
    assert "ventricles 5-40 mL" in lines[0]
    assert lines[-1] == "| ventricles | QC | 5 candidates in 2 rounds | 1 rejected (ICV outside range: 1) |"


def test_answer_calls_a_difference_only_when_its_interval_excludes_zero(tmp_path):
    per_case = []
    for seed in range(3):
        for i in range(8):
            base = 0.80 + 0.01 * i + 0.002 * seed
            for model, shift in (("real", 0.0), ("pool", 0.05), ("pool_augmented", 0.051), ("augmented", 0.05)):
                per_case.append({"model": model, "seed": seed, "case": f"c{i}", "dice": base + shift, "iou": 0.7,
                                 "abs_volume_error_ml": 4})  # fmt: skip
    subsets = {"all": [f"c{i}" for i in range(8)], "inside": [f"c{i}" for i in range(5)],
               "beyond": [f"c{i}" for i in range(5, 8)]}  # fmt: skip
    comparison = compare_variants(per_case, ("real", "pool"), subsets, n_resamples=2000)
    evaluation = tmp_path / "evaluation" / "tumours"
    write_csv(evaluation / "comparison.csv", comparison, list(dict.fromkeys(k for r in comparison for k in r)))
    ledgers = [{"model": "slice LDM diffusion", "training": ["a", "b"]}]
    bins = {"rule": "inside 3-50 mL: inside; else beyond", "real_range": [3.0, 50.0], "data_range": [3.0, 50.0],
            "quantity": "tumour_ml"}  # fmt: skip
    design = {"generators_from": "pool", "aliases": {}, "ledgers": ledgers, "bins": bins}
    (evaluation / "design.json").write_text(json.dumps(design))
    lines = answer_lines(tmp_path, "tumours", resolve_settings("study"))
    table = {line.split(" | ")[1]: line for line in lines if line.startswith("| ") and " - " in line}
    assert "no difference shown" in table["pool_augmented - pool"]  # +0.001 Dice is within the seeds' noise
    assert "**better**" in table["augmented - real"] and "+0.050 (" in table["augmented - real"]
    assert "**better**" in table["pool - real"]
    assert any(line.startswith("- Tumours: no difference on the whole hold-out between `pool_augmented` and `pool`")
               for line in lines)  # fmt: skip
    assert (
        "3 nnU-Net seed(s) per variant, 8 hold-out cases: 5 inside the real set, 0 inside the generators' data only, "
        "3 beyond all" in lines[0]
    )
    assert "| question | comparison | Dice, all cases | Dice, inside the real set | Dice, beyond all |" in lines
    assert "n = 3: too few cases to compare" in table["pool_augmented - pool"]  # the beyond bin: means only
    assert "- Tumours, beyond every model's data: 3 case(s), too few to compare." in lines
