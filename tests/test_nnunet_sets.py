"""nnU-Net set assembly (real / synthetic / augmented), nnU-Net's own integrity check, and a tiny training."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import run_script, save_nifti
from shared.demo.dataset import write_brain_dataset
from shared.io import InputError
from shared.labels import ventricle_mask
from shared.segmentation.nnunet_dataset import assemble_dataset, assemble_variants, label_mapping, remap_labels

SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Demo brains as real pairs (datalist), generated-looking pairs (folder + manifest.csv), a hold-out."""
    root = tmp_path_factory.mktemp("sources")
    write_brain_dataset(root / "real", 4, SHAPE, None, 0)
    write_brain_dataset(root / "synthetic", 6, SHAPE, None, 7)
    write_brain_dataset(root / "test", 2, SHAPE, None, 11)
    rows = [
        {"image": f"images/brain_{i:03d}.nii.gz", "label": f"labels/brain_{i:03d}.nii.gz", "c": f"{0.1 * i:.1f}"}
        for i in range(6)
    ]
    with open(root / "synthetic" / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "label", "c"])
        writer.writeheader()
        writer.writerows(rows)
    return {"real": root / "real" / "datalist.json", "synthetic": root / "synthetic", "test": root / "test"}


@pytest.fixture(scope="module")
def variants(sources, tmp_path_factory) -> dict[str, Path]:
    raw = tmp_path_factory.mktemp("nnunet") / "nnUNet_raw"
    return assemble_variants(
        501, "Vent", sources["real"], sources["synthetic"], sources["test"], labels="ventricles", ratio=1.0,
        nnunet_raw=raw, progress=False,
    )  # fmt: skip


def _provenance(folder: Path) -> list[dict[str, str]]:
    with open(folder / "provenance.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_three_variants_have_the_expected_cases_labels_and_provenance(variants, sources):
    counts = {"real": (4, 0), "synthetic": (0, 6), "augmented": (4, 4)}
    for variant, folder in variants.items():
        info = json.loads((folder / "dataset.json").read_text())
        n_real, n_syn = counts[variant]
        assert info["numTraining"] == n_real + n_syn == len(list((folder / "labelsTr").iterdir()))
        assert info["labels"] == {"background": 0, "ventricles": 1} and info["file_ending"] == ".nii.gz"
        assert info["channel_names"] == {"0": "FLAIR"}
        assert len(list((folder / "imagesTs").iterdir())) == len(list((folder / "labelsTs").iterdir())) == 2
        rows = _provenance(folder)
        train = [r for r in rows if r["split"] == "train"]
        assert sum(r["origin"] == "real" for r in train) == n_real
        assert sum(r["origin"] == "synthetic" for r in train) == n_syn
        assert all(r["c"] for r in train if r["origin"] == "synthetic")  # the manifest's conditions travel along
        for case in (r["case"] for r in train):
            assert (folder / "imagesTr" / f"{case}_0000.nii.gz").is_file()
    # the remapped label is exactly the ventricle mask of the source map
    row = _provenance(variants["augmented"])[0]
    source = np.asarray(nib.load(row["label_source"]).dataobj)
    written = nib.load(variants["augmented"] / "labelsTr" / f"{row['case']}.nii.gz")
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(written.dataobj), ventricle_mask(source).astype(np.uint8))
    np.testing.assert_allclose(written.affine, nib.load(row["label_source"]).affine)
    assert float(row["foreground_ml"]) > 0


@pytest.mark.slow
def test_nnunet_plan_and_preprocess_verifies_all_three_variants(variants):
    raw = next(iter(variants.values())).parent
    env = {
        **os.environ,
        "nnUNet_raw": str(raw),
        "nnUNet_preprocessed": str(raw.parent / "nnUNet_preprocessed"),
        "nnUNet_results": str(raw.parent / "nnUNet_results"),
    }
    command = [str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", "501", "502", "503"]
    result = subprocess.run(
        [*command, "--verify_dataset_integrity", "--no_pp", "-npfp", "2"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for dataset in ("Dataset501_VentReal", "Dataset502_VentSynthetic", "Dataset503_VentAugmented"):
        assert (raw.parent / "nnUNet_preprocessed" / dataset / "nnUNetPlans.json").is_file()


def test_existing_dataset_id_is_refused_unless_overwrite(sources, tmp_path):
    raw = tmp_path / "raw"
    assemble_dataset("real", 510, "First", real=sources["real"], nnunet_raw=raw, progress=False)
    with pytest.raises(InputError, match="Dataset510_First: dataset id 510 exists already"):
        assemble_dataset("real", 510, "Second", real=sources["real"], nnunet_raw=raw, progress=False)
    folder = assemble_dataset(
        "real", 510, "Second", real=sources["real"], labels="ventricles", nnunet_raw=raw, overwrite=True, progress=False
    )
    assert [p.name for p in raw.iterdir()] == ["Dataset510_Second"]  # replaced, no partial folder left
    assert json.loads((folder / "dataset.json").read_text())["labels"] == {"background": 0, "ventricles": 1}


def test_bad_pair_fails_naming_the_file_and_leaves_no_dataset(sources, tmp_path):
    bad = tmp_path / "bad"
    save_nifti(bad / "images" / "a.nii.gz", np.zeros((8, 8, 8), np.float32))
    save_nifti(bad / "labels" / "a.nii.gz", np.zeros((8, 8, 9), np.uint8))
    with pytest.raises(InputError, match=r"labels/a\.nii\.gz: shape \(8, 8, 9\) differs"):
        assemble_dataset("augmented", 7, "Bad", real=sources["real"], synthetic=bad, n_synthetic=1,
                         nnunet_raw=tmp_path / "raw", num_workers=1, progress=False)  # fmt: skip
    assert list((tmp_path / "raw").iterdir()) == []


def test_refusals_are_one_clear_message(sources, tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(InputError, match="needs 8 synthetic pairs, only 6 given"):
        assemble_dataset("augmented", 9, "X", sources["real"], sources["synthetic"], ratio=2, nnunet_raw=raw)
    with pytest.raises(InputError, match="variant 'mixed': expected one of real, synthetic, augmented"):
        assemble_dataset("mixed", 9, "X", sources["real"], nnunet_raw=raw)
    with pytest.raises(InputError, match="needs synthetic pairs"):
        assemble_dataset("synthetic", 9, "X", sources["real"], nnunet_raw=raw)
    with pytest.raises(InputError, match="expected images/ and labels/ folders"):
        assemble_dataset("real", 9, "X", tmp_path, nnunet_raw=raw)
    (tmp_path / "map.json").write_text('{"ventricles": ["4"]}')
    with pytest.raises(InputError, match="map.json: label 'ventricles' must list positive integer ids"):
        label_mapping(tmp_path / "map.json")


def test_json_mapping_gives_consecutive_labels_in_order(tmp_path):
    (tmp_path / "map.json").write_text('{"lateral": [4, 43], "third": [14], "tissue": [2, 41]}')
    mapping = label_mapping(tmp_path / "map.json")
    label_map = np.array([[[0, 4, 43, 14, 2, 41, 17]]])
    np.testing.assert_array_equal(remap_labels(label_map, mapping), [[[0, 1, 1, 2, 3, 3, 0]]])
    assert remap_labels(label_map, label_mapping("whole_tumour")).max() == 1


def test_command_line_assembles_and_reports_bad_input(sources, tmp_path):
    raw = tmp_path / "raw"
    args = ["--real", str(sources["real"]), "--labels", "ventricles", "--nnunet_raw", str(raw), "--progress", "False"]
    result = run_script("assemble_nnunet_dataset.py", "dataset", "--variant", "real", "--dataset_id", "42",
                        "--name", "Cli", *args)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (raw / "Dataset042_Cli" / "dataset.json").is_file()
    again = run_script("assemble_nnunet_dataset.py", "dataset", "--variant", "real", "--dataset_id", "42",
                       "--name", "Cli", *args)  # fmt: skip
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("error: ") and "--overwrite" in again.stderr


@pytest.mark.slow
def test_tiny_nnunet_trains_predicts_and_skips_finished_steps(variants, tmp_path):
    """Plan + preprocess + 1 epoch of 2 iterations + prediction of the hold-out; a rerun redoes nothing."""
    root = variants["real"].parent.parent
    args = ["--dataset_id", "501", "--nnunet_root", str(root), "--epochs", "1", "--iterations_per_epoch", "2",
            "--val_iterations_per_epoch", "1", "--width_factor", "0.25", "--augmentation_processes", "0",
            "--batch_size", "3"]  # fmt: skip
    result = run_script("train_segmentation.py", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    model = root / "nnUNet_results" / "Dataset501_VentReal" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    assert (model / "fold_all" / "checkpoint_final.pth").is_file()
    predictions = sorted((model / "predictions_Ts").glob("*.nii.gz"))
    assert [p.name for p in predictions] == ["test_brain_000.nii.gz", "test_brain_001.nii.gz"]
    truth = nib.load(variants["real"] / "labelsTs" / "test_brain_000.nii.gz")
    predicted = nib.load(predictions[0])
    assert predicted.shape == truth.shape
    np.testing.assert_allclose(predicted.affine, truth.affine, atol=1e-4)
    assert set(np.unique(np.asarray(predicted.dataobj))) <= {0, 1}
    plans = json.loads((root / "nnUNet_preprocessed" / "Dataset501_VentReal" / "nnUNetPlans.json").read_text())
    features = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"]
    assert features[0] == 8  # 32 * 0.25
    assert plans["configurations"]["3d_fullres"]["batch_size"] == 3  # fixed, not the planner's
    record = json.loads((model / "fold_all" / "training_settings.json").read_text())
    assert record["batch_size"] == 3
    rerun = run_script("train_segmentation.py", *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "skipped" in rerun.stderr and "training skipped" in rerun.stderr and "prediction skipped" in rerun.stderr


@pytest.mark.slow
def test_seeded_adamw_training_is_repeatable_and_bad_schedules_are_refused(variants):
    """The demo's nnU-Net schedule (AdamW, seeded, augmentation in-process) gives the same weights twice."""
    import shutil

    import torch

    root = variants["synthetic"].parent.parent
    args = ["--dataset_id", "502", "--nnunet_root", str(root), "--epochs", "1", "--iterations_per_epoch", "2",
            "--val_iterations_per_epoch", "1", "--width_factor", "0.25", "--augmentation_processes", "0",
            "--optimizer", "adamw", "--initial_lr", "0.003", "--seed", "7", "--predict_test", "False"]  # fmt: skip
    model = root / "nnUNet_results" / "Dataset502_VentSynthetic"
    weights = []
    for _ in range(2):
        shutil.rmtree(model, ignore_errors=True)
        done = run_script("train_segmentation.py", *args)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        checkpoint = model / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_all" / "checkpoint_final.pth"
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        assert "exp_avg" in next(iter(state["optimizer_state"]["state"].values()))  # Adam's moments, not SGD momentum
        weights.append(state["network_weights"])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)
    bad = run_script("train_segmentation.py", *args[:-8], "--optimizer", "adam")
    assert bad.returncode == 2 and "error: --optimizer: unknown 'adam'" in bad.stderr
