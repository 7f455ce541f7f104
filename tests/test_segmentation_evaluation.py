"""Segmentation evaluation: metrics against hand-computed values, case matching, summaries, the command line."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from conftest import run_script, save_nifti
from shared.evaluation.segmentation_metrics import (
    SUMMARY_COLUMNS,
    dice,
    evaluate_case,
    evaluate_models,
    iou,
    label_volumes_ml,
    match_cases,
    summarise,
    volume_ml,
)
from shared.io import InputError, read_csv, write_datalist

#: 2 mm isotropic voxels: 8 mm^3 = 0.008 mL each.
AFFINE_2MM = np.diag([2.0, 2.0, 2.0, 1.0])
#: 10 mm isotropic voxels: 1 mL each, so volumes above 150 mL fit in a tiny array.
AFFINE_1ML = np.diag([10.0, 10.0, 10.0, 1.0])


def _mask(n_voxels: int, shape: tuple[int, int, int] = (8, 8, 4), label: int = 1) -> np.ndarray:
    """The first ``n_voxels`` voxels (C order) set to ``label``."""
    mask = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    mask[:n_voxels] = label
    return mask.reshape(shape)


# ----------------------------------------------------------------------------- metrics


def test_dice_and_iou_match_hand_computed_values():
    pred = np.array([[1, 1], [1, 0]], dtype=np.uint8)[..., None]  # 3 voxels
    truth = np.array([[1, 1], [0, 0]], dtype=np.uint8)[..., None]  # 2 voxels, both inside pred
    assert dice(pred, truth) == pytest.approx(2 * 2 / (3 + 2))  # 0.8
    assert iou(pred, truth) == pytest.approx(2 / 3)  # overlap 2, union 3
    assert dice(pred.astype(bool), truth.astype(bool)) == pytest.approx(0.8)
    # disjoint: 0; identical: 1
    assert dice(pred, 1 - pred) == 0.0 and iou(pred, 1 - pred) == 0.0
    assert dice(truth, truth) == 1.0 and iou(truth, truth) == 1.0


def test_both_empty_is_perfect_and_one_empty_is_zero():
    empty = np.zeros((2, 2, 1), dtype=np.uint8)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    one = empty.copy()
    one[0, 0, 0] = 1
    assert dice(one, empty) == 0.0 and iou(empty, one) == 0.0


def test_label_selection_counts_only_the_chosen_labels():
    pred = np.array([[2, 2], [1, 0]])[..., None]
    truth = np.array([[2, 1], [1, 1]])[..., None]
    # label 2: pred 2 voxels, truth 1, overlap 1 -> Dice 2/3, IoU 1/2; any > 0: pred 3, truth 4, overlap 3
    assert dice(pred, truth, labels=2) == pytest.approx(2 / 3)
    assert iou(pred, truth, labels=[2]) == pytest.approx(1 / 2)
    assert dice(pred, truth) == pytest.approx(6 / 7)
    assert iou(pred, truth, labels=(1, 2)) == pytest.approx(3 / 4)


def test_volume_in_ml_uses_the_voxel_size():
    mask = np.array([[1, 1], [1, 0]], dtype=np.uint8)[..., None]
    assert volume_ml(mask, AFFINE_2MM) == pytest.approx(3 * 8 / 1000)  # 0.024 mL
    assert volume_ml(mask * 3, AFFINE_2MM, labels=1) == 0.0


def test_evaluate_case_reads_files_and_reports_signed_and_absolute_error(tmp_path):
    truth = save_nifti(tmp_path / "truth" / "c1.nii.gz", _mask(100), AFFINE_2MM)
    pred = save_nifti(tmp_path / "pred" / "c1.nii.gz", _mask(80), AFFINE_2MM)
    row = evaluate_case(pred, truth)
    assert row["case"] == "c1"
    assert row["dice"] == pytest.approx(160 / 180) and row["iou"] == pytest.approx(80 / 100)
    assert row["truth_ml"] == pytest.approx(0.8) and row["pred_ml"] == pytest.approx(0.64)
    assert row["volume_error_ml"] == pytest.approx(-0.16) and row["abs_volume_error_ml"] == pytest.approx(0.16)


def test_grid_mismatch_names_the_prediction_file(tmp_path):
    truth = save_nifti(tmp_path / "truth" / "c1.nii.gz", _mask(10), AFFINE_2MM)
    shifted = save_nifti(tmp_path / "pred" / "c1.nii.gz", _mask(10), AFFINE_1ML)
    with pytest.raises(InputError, match=r"pred/c1\.nii\.gz: affine differs"):
        evaluate_case(shifted, truth)
    smaller = save_nifti(tmp_path / "pred2" / "c1.nii.gz", _mask(10, (4, 4, 4)), AFFINE_2MM)
    with pytest.raises(InputError, match=r"pred2/c1\.nii\.gz: shape"):
        evaluate_case(smaller, truth)


# ----------------------------------------------------------------------------- matching


def test_match_cases_by_name_from_folder_or_datalist(tmp_path, caplog):
    for name in ("a", "b"):
        save_nifti(tmp_path / "truth" / f"{name}.nii.gz", _mask(5), AFFINE_2MM)
    save_nifti(tmp_path / "pred" / "a.nii", _mask(5), AFFINE_2MM)  # another suffix still matches
    save_nifti(tmp_path / "pred" / "b.nii.gz", _mask(5), AFFINE_2MM)
    save_nifti(tmp_path / "pred" / "extra.nii.gz", _mask(5), AFFINE_2MM)
    (tmp_path / "pred" / "plans.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="shared"):
        pairs = match_cases(tmp_path / "pred", tmp_path / "truth")
    assert [(p.case, p.prediction.name) for p in pairs] == [("a", "a.nii"), ("b", "b.nii.gz")]
    assert "extra" in caplog.text and "ignored" in caplog.text

    datalist = write_datalist(tmp_path / "datalist.json", {"test": [{"image": "x.nii.gz", "label": "truth/b.nii.gz"}]})
    assert [p.case for p in match_cases(tmp_path / "pred", datalist)] == ["b"]


def test_missing_prediction_names_the_case(tmp_path):
    for name in ("a", "b", "c"):
        save_nifti(tmp_path / "truth" / f"{name}.nii.gz", _mask(5), AFFINE_2MM)
    save_nifti(tmp_path / "pred" / "b.nii.gz", _mask(5), AFFINE_2MM)
    with pytest.raises(InputError, match=r"pred: no prediction for case\(s\) a, c of"):
        match_cases(tmp_path / "pred", tmp_path / "truth")


def test_label_volumes_of_a_training_folder(tmp_path):
    save_nifti(tmp_path / "labelsTr" / "a.nii.gz", _mask(3), AFFINE_1ML)
    save_nifti(tmp_path / "labelsTr" / "b.nii.gz", _mask(7, label=2), AFFINE_1ML)
    assert label_volumes_ml(tmp_path / "labelsTr") == pytest.approx([3.0, 7.0])
    assert label_volumes_ml(tmp_path / "labelsTr", labels=1) == pytest.approx([3.0, 0.0])


# ----------------------------------------------------------------------------- summaries


def _row(model: str, dice_value: float, truth_ml: float, error_ml: float) -> dict:
    return {"model": model, "case": f"c{truth_ml:g}", "dice": dice_value, "iou": dice_value / (2 - dice_value),
            "truth_ml": truth_ml, "pred_ml": truth_ml + error_ml, "abs_volume_error_ml": abs(error_ml),
            "volume_error_ml": error_ml}  # fmt: skip


def test_summary_mean_sd_and_threshold_breakdown_by_hand():
    rows = [_row("m", 0.8, 200.0, -10.0), _row("m", 0.6, 100.0, 4.0), _row("m", 1.0, 160.0, 0.0)]
    summary = summarise(rows, volume_threshold_ml=150.0)
    assert [(s["subset"], s["n"]) for s in summary] == [("all", 3), ("truth > 150 mL", 2), ("truth <= 150 mL", 1)]
    everything, above, below = summary
    assert everything["dice_mean"] == pytest.approx(0.8)
    assert everything["dice_sd"] == pytest.approx(0.2)  # sqrt((0 + 0.04 + 0.04) / 2)
    assert everything["abs_volume_error_ml_mean"] == pytest.approx(14 / 3)
    assert everything["volume_error_ml_mean"] == pytest.approx(-2.0)
    assert above["dice_mean"] == pytest.approx(0.9) and above["dice_sd"] == pytest.approx(math.sqrt(0.02))
    assert above["abs_volume_error_ml_mean"] == pytest.approx(5.0)
    assert below["dice_mean"] == pytest.approx(0.6) and below["dice_sd"] == 0.0  # one case: SD 0
    assert list(everything) == list(SUMMARY_COLUMNS)


def test_summary_groups_models_and_blanks_empty_subsets():
    rows = [_row("a", 0.5, 10.0, 1.0), _row("b", 0.7, 20.0, 2.0)]
    summary = summarise(rows, volume_threshold_ml=150.0)
    assert [(s["model"], s["subset"], s["n"]) for s in summary] == [
        ("a", "all", 1), ("a", "truth > 150 mL", 0), ("a", "truth <= 150 mL", 1),
        ("b", "all", 1), ("b", "truth > 150 mL", 0), ("b", "truth <= 150 mL", 1),
    ]  # fmt: skip
    empty = summary[1]
    assert all(empty[c] == "" for c in SUMMARY_COLUMNS if c.endswith(("_mean", "_sd")))


# ----------------------------------------------------------------------------- whole evaluation


def _evaluation_folders(tmp_path):
    """Truth of 200, 40 and 100 mL; model 'exact' matches it, model 'half' predicts half of each (a subset)."""
    for name, n in (("c1", 200), ("c2", 40), ("c3", 100)):
        save_nifti(tmp_path / "labelsTs" / f"{name}.nii.gz", _mask(n), AFFINE_1ML)
        save_nifti(tmp_path / "exact" / f"{name}.nii.gz", _mask(n), AFFINE_1ML)
        save_nifti(tmp_path / "half" / f"{name}.nii.gz", _mask(n // 2), AFFINE_1ML)
    return tmp_path / "labelsTs"


def test_evaluate_models_writes_tables_and_pictures(tmp_path):
    truth = _evaluation_folders(tmp_path)
    summary = evaluate_models(
        {"exact": tmp_path / "exact", "half": tmp_path / "half"},
        truth,
        tmp_path / "eval",
        training_volumes={"real": [20.0, 50.0, 90.0], "augmented": [20.0, 50.0, 90.0, 180.0, 220.0]},
    )
    per_case = read_csv(tmp_path / "eval" / "per_case.csv")
    assert [(r["model"], r["case"]) for r in per_case][:3] == [("exact", "c1"), ("exact", "c2"), ("exact", "c3")]
    half_c1 = per_case[3]
    assert float(half_c1["dice"]) == pytest.approx(200 / 300) and float(half_c1["iou"]) == pytest.approx(0.5)
    assert float(half_c1["volume_error_ml"]) == pytest.approx(-100.0)
    exact_all, exact_above, _, half_all, half_above, half_below = summary
    assert exact_all["dice_mean"] == 1.0 and exact_all["abs_volume_error_ml_mean"] == 0.0
    assert half_all["abs_volume_error_ml_mean"] == pytest.approx((100 + 20 + 50) / 3)
    assert exact_above["n"] == half_above["n"] == 1 and half_below["n"] == 2
    assert len(read_csv(tmp_path / "eval" / "summary.csv")) == 6
    markdown = (tmp_path / "eval" / "summary.md").read_text()
    assert "| half | truth > 150 mL | 1 | 0.667 ± 0.000 | 0.500 ± 0.000 | 100.0 ± 0.0 |" in markdown
    for picture in ("errors.png", "training_volumes.png"):
        assert (tmp_path / "eval" / picture).stat().st_size > 1000
    assert not list((tmp_path / "eval").glob(".tmp-*"))


def test_command_line_end_to_end(tmp_path):
    truth = _evaluation_folders(tmp_path)
    save_nifti(tmp_path / "labelsTr" / "t1.nii.gz", _mask(30), AFFINE_1ML)
    save_nifti(tmp_path / "labelsTr" / "t2.nii.gz", _mask(60), AFFINE_1ML)
    done = run_script(
        "evaluate_segmentation.py",
        "--truth",
        str(truth),
        "--predictions",
        f"{{'exact': '{tmp_path / 'exact'}', 'half': '{tmp_path / 'half'}'}}",
        "--output_dir",
        str(tmp_path / "eval"),
        "--volume_threshold_ml",
        "90",
        "--labels",
        "1",
        "--training",
        f"{{'real': '{tmp_path / 'labelsTr'}'}}",
    )
    assert done.returncode == 0, done.stderr
    for name in ("per_case.csv", "summary.csv", "summary.md", "errors.png", "training_volumes.png"):
        assert (tmp_path / "eval" / name).is_file(), name
    summary = read_csv(tmp_path / "eval" / "summary.csv")
    assert [(r["model"], r["subset"], r["n"]) for r in summary][:3] == [
        ("exact", "all", "3"), ("exact", "truth > 90 mL", "2"), ("exact", "truth <= 90 mL", "1"),
    ]  # fmt: skip

    # one folder: the model is named after it
    single = run_script(
        "evaluate_segmentation.py", "--truth", str(truth), "--predictions", str(tmp_path / "half"),
        "--output_dir", str(tmp_path / "eval_half"),
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    assert {r["model"] for r in read_csv(tmp_path / "eval_half" / "per_case.csv")} == {"half"}


def test_command_line_bad_input_is_one_line_with_exit_code_2(tmp_path):
    truth = _evaluation_folders(tmp_path)
    (tmp_path / "half" / "c2.nii.gz").unlink()
    failed = run_script(
        "evaluate_segmentation.py", "--truth", str(truth), "--predictions", str(tmp_path / "half"),
        "--output_dir", str(tmp_path / "eval"),
    )  # fmt: skip
    assert failed.returncode == 2
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "no prediction for case(s) c2" in lines[-1]
    assert sum(line.startswith("error") for line in lines) == 1
    assert not (tmp_path / "eval").exists()
