"""Quality control of generated pairs: hand-made label maps and masks accepted or rejected for the right reason."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import run_script, save_nifti
from shared.io import InputError, read_csv, read_json
from shared.segmentation.nnunet_dataset import read_pair_sources
from shared.workflow.generation_rounds import accepted_rows, generate_with_qc
from shared.workflow.pair_qc import (
    TumourQC,
    VentricleQC,
    check_manifest,
    check_tumour_mask,
    check_ventricle_label_map,
    qc_settings,
    rejection_counts,
)

AFFINE = np.diag([6.0, 6.0, 6.0, 1.0])  # 6 mm voxels: 0.216 mL each
VOXEL_ML = 0.216


def brain(shape=(32, 32, 32), left=4, right=43) -> np.ndarray:
    """A ball of white matter (label 2) with two box-shaped lateral ventricles."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    radius = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0))
    label = np.where(radius < 12, 2, 0).astype(np.int32)
    label[12:15, 14:18, 14:18] = left
    label[17:20, 14:18, 14:18] = right
    return label


ICV = float((brain() > 0).sum()) * VOXEL_ML
QC = VentricleQC(icv_range_ml=(0.7 * ICV, 1.4 * ICV), max_c_error=0.3)


def test_plausible_brain_on_target_is_accepted():
    assert check_ventricle_label_map(brain(), VOXEL_ML, 0.5, 0.6, QC) == []


def test_off_target_c_is_rejected():
    (reason,) = check_ventricle_label_map(brain(), VOXEL_ML, 0.2, 0.9, QC)
    assert reason.startswith("c 0.90 for requested 0.20")


def test_brain_in_pieces_and_bad_icv_are_rejected():
    label = brain()
    label[0:3] = 2  # a detached slab of tissue
    assert any(r.startswith("brain in pieces") for r in check_ventricle_label_map(label, VOXEL_ML, 0.5, 0.5, QC))
    huge = np.full((32, 32, 32), 2, dtype=np.int32)
    huge[12:15, 14:18, 14:18], huge[17:20, 14:18, 14:18] = 4, 43
    reasons = check_ventricle_label_map(huge, VOXEL_ML, 0.5, 0.5, QC)
    assert reasons == [f"ICV {huge.size * VOXEL_ML:.0f} mL outside {0.7 * ICV:.0f}-{1.4 * ICV:.0f} mL"]


def test_missing_or_scattered_ventricle_is_rejected():
    assert check_ventricle_label_map(brain(right=2), VOXEL_ML, 0.5, 0.5, QC) == ["no lateral ventricle 43"]
    label = brain()
    label[12:15, 14:18, 14:18] = 2
    for x, y in ((10, 8), (14, 22), (20, 10), (8, 18)):  # four single-voxel specks
        label[x, y, 16] = 4
    reasons = check_ventricle_label_map(label, VOXEL_ML, 0.5, 0.5, QC)
    assert reasons == ["lateral ventricle 4 in pieces (largest holds 25%)"]


def tumour(shape=(64, 64, 32)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[28:36, 28:36, 12:18] = 1
    return mask


FEATURES = {"volume": 0.4, "centre_x": 0.5, "centre_y": 0.5, "centre_z": 0.5}


def test_tumour_checks():
    qc = TumourQC(max_volume_error=0.3, max_centre_error=0.3, max_tumour_components=2)
    assert check_tumour_mask(tumour(), FEATURES, FEATURES, qc) == []
    assert check_tumour_mask(np.zeros((64, 64, 32)), FEATURES, FEATURES, qc) == ["empty mask"]
    scattered = tumour()
    scattered[2:5, 2:5, 2:5] = scattered[58:61, 2:5, 2:5] = 1
    assert check_tumour_mask(scattered, FEATURES, FEATURES, qc) == ["3 tumour pieces (at most 2)"]
    specks = tumour()
    specks[2, 2, 2] = specks[60, 60, 2] = 1  # single voxels are below min_piece_voxels: not pieces
    assert check_tumour_mask(specks, FEATURES, FEATURES, qc) == []
    off = {**FEATURES, "volume": 0.9, "centre_x": 0.0}
    reasons = check_tumour_mask(tumour(), FEATURES, off, qc)
    assert [r.split(" ")[0] for r in reasons] == ["volume", "centre"]
    assert rejection_counts([{"qc_status": "rejected", "qc_reason": "; ".join(reasons)}]) == {
        "volume off target": 1, "centre off target": 1,
    }  # fmt: skip
    backgrounds = [{"qc_status": "rejected", "qc_reason": f"no dark background (border / brain intensity {v:.2f} "
                    "above real 0.07)"} for v in (0.15, 0.30)]  # fmt: skip
    assert rejection_counts(backgrounds) == {"no dark background": 2}  # one kind, whatever its figures


def test_tolerances_are_validated():
    with pytest.raises(InputError, match="icv_range_ml"):
        VentricleQC(icv_range_ml=(10.0, 5.0))
    with pytest.raises(InputError, match="--max_volume_eror: not a tumours tolerance"):
        qc_settings("tumours", max_volume_eror=0.2)
    assert qc_settings("ventricles", icv_range_ml=[1, 2]).icv_range_ml == (1.0, 2.0)


def _write_ventricle_round(folder: Path, maps: list[np.ndarray], c: list[tuple[float, float]]) -> Path:
    rows = []
    for i, (label, (requested, achieved)) in enumerate(zip(maps, c)):
        name = f"pair_{i:04d}.nii.gz"
        save_nifti(folder / "labels" / name, label.astype(np.int16), AFFINE)
        save_nifti(folder / "images" / name, (label > 0).astype(np.float32), AFFINE)
        rows.append({"image": f"images/{name}", "label": f"labels/{name}", "requested_c": requested,
                     "achieved_c": achieved, "ventricle_ml": float((label == 4).sum()) * VOXEL_ML,
                     "icv_ml": float((label > 0).sum()) * VOXEL_ML})  # fmt: skip
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def test_manifest_gets_verdicts_and_assembly_skips_rejected_pairs(tmp_path):
    manifest = _write_ventricle_round(tmp_path, [brain(), brain(right=2)], [(0.5, 0.5), (0.5, 0.5)])
    rows = check_manifest(manifest, "ventricles", QC)
    assert [r["qc_status"] for r in rows] == ["accepted", "rejected"]
    assert read_csv(manifest)[1]["qc_reason"] == "no lateral ventricle 43"
    assert [p.label.name for p in read_pair_sources(tmp_path, "synthetic")] == ["pair_0000.nii.gz"]


def test_rounds_regenerate_rejected_requests_until_enough_pass(tmp_path):
    calls = []

    def generate(folder: Path, count: int, seed: int, requests):
        calls.append((count, seed, requests))
        if len(calls) == 1:  # first round: one good map, one off target, one without a ventricle
            maps, c = [brain(), brain(), brain(right=2)], [(0.3, 0.3), (0.9, 0.1), (1.1, 1.1)]
            return _write_ventricle_round(folder, maps, c)
        return _write_ventricle_round(folder, [brain()] * count, [(r, r) for r in requests])

    summary = generate_with_qc(tmp_path, generate, "ventricles", QC, n_wanted=3, seed=5, max_rounds=3)
    assert calls[0] == (3, 5, None) and calls[1] == (2, 1005, [0.9, 1.1]) and len(calls) == 2
    assert summary["accepted"] == 3 and summary["rejected"] == 2 and summary["rounds"] == 2
    assert summary["reasons"] == {"c off target": 1, "missing lateral ventricle": 1}
    assert read_json(tmp_path / "qc.json") == summary
    accepted = accepted_rows(tmp_path / "manifest.csv")
    assert [r["label"] for r in accepted] == [
        "rounds/round_0/labels/pair_0000.nii.gz", "rounds/round_1/labels/pair_0000.nii.gz",
        "rounds/round_1/labels/pair_0001.nii.gz",
    ]  # fmt: skip  # the rounds' own files, kept as written (a rerun resumes them)
    assert [r["case"] for r in accepted] == ["pair_0000", "r1_pair_0000", "r1_pair_0001"]
    pairs = read_pair_sources(tmp_path, "synthetic")
    assert len({p.stem for p in pairs}) == 3 and all(p.image.is_file() for p in pairs)
    assert (tmp_path / "mosaic.png").is_file()
    # A rerun keeps the earlier rounds: the generator finds each round's samples where it left them (the
    # bundles skip every sample whose record matches), so nothing is generated again.
    asked = []

    def resume(folder: Path, count: int, seed: int, requests):
        asked.append((folder.name, count, seed))
        assert (folder / "manifest.csv").is_file() and len(list((folder / "labels").iterdir())) == count
        return folder / "manifest.csv"

    again = generate_with_qc(tmp_path, resume, "ventricles", QC, n_wanted=3, seed=5, max_rounds=3)
    assert asked == [("round_0", 3, 5), ("round_1", 2, 1005)] and again == summary


def test_command_line_checks_a_folder_and_refuses_bad_input(tmp_path):
    _write_ventricle_round(tmp_path / "pairs", [brain(), brain(right=2)], [(0.5, 0.5), (0.5, 0.5)])
    done = run_script("check_pairs.py", "ventricles", str(tmp_path / "pairs"), "--max_c_error", "0.3")
    assert done.returncode == 0, done.stderr
    assert "1 of 2 pairs accepted" in done.stdout and "missing lateral ventricle: 1" in done.stdout
    assert read_csv(tmp_path / "pairs" / "manifest.csv")[0]["qc_status"] == "accepted"
    bad = run_script("check_pairs.py", "lungs", str(tmp_path / "pairs"))
    assert bad.returncode == 2 and "error: kind: unknown 'lungs'" in bad.stderr
    typo = run_script("check_pairs.py", "ventricles", str(tmp_path / "pairs"), "--max_c_eror", "0.3")
    assert typo.returncode == 2 and "max_c_eror" in typo.stderr
