"""The slice_based_ldm_brats bundle run as users run it: `python -m monai.bundle run` from its folder.

Tiny demo tumour cases are prepared by the bundle's own prepare config (32x32x16 grid); the
module-scoped runs train the slice VAE (with --tracking mlflow) and the diffusion stage once,
and serve the inference, resume, tracking and torchrun tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from conftest import (
    assert_one_line_failure,
    cli_values,
    copy_bundle_configs,
    missing_bundle_properties,
    mlflow_client,
    runs_named,
)
from conftest import bundle_run as run
from shared.benchmarks.accuracy_guard import compare_outputs
from shared.conditioning.features import TUMOUR_FEATURE_NAMES
from shared.demo.dataset import write_tumour_dataset
from shared.io import read_csv, read_json

pytestmark = pytest.mark.slow  # trains through bundle runs (pytest -m "not slow" skips them)

DEMO = "configs/presets/demo.yaml"
TINY = ["--autoencoder_channels", "[8,16,16]", "--latent_channels", "3", "--diffusion_channels", "[8,16,16]"]
AUTOENCODER = ["configs/train_autoencoder.yaml", DEMO]
DIFFUSION = ["configs/train_autoencoder.yaml", "configs/train_diffusion.yaml", DEMO]
INFERENCE = ["configs/inference.yaml", DEMO]


def copy_bundle(target: Path) -> Path:
    return copy_bundle_configs("slice_based_ldm_brats", target)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Six demo tumour cases prepared by configs/prepare.yaml on a 32x32x16 grid (two for validation)."""
    root = tmp_path_factory.mktemp("sbldm_data")
    source = write_tumour_dataset(root / "raw", n_cases=6, shape=(32, 32, 32), radius_range_mm=(20, 35))
    folder = copy_bundle(root / "bundle")
    datalist = root / "prepared" / "datalist.json"
    done = run(folder, ["configs/prepare.yaml", DEMO], "--source", str(source), "--datalist", str(datalist),
               "--working_shape", "[32,32,16]", "--validation_fraction", "0.34")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return datalist


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared) -> Path:
    folder = copy_bundle(tmp_path_factory.mktemp("sbldm_bundle"))
    done = run(folder, AUTOENCODER, "--datalist", str(prepared), *TINY, "--autoencoder_epochs", "2",
               "--val_interval", "1", "--tracking", "mlflow")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    done = run(
        folder, DIFFUSION, "--datalist", str(prepared), *TINY, "--diffusion_epochs", "2", "--tumour_loss_weight", "5",
        "--condition_dropout", "0.2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def test_prepared_pairs_carry_their_tumour_vectors(prepared):
    content = read_json(prepared)
    assert len(content["training"]) == 4 and len(content["validation"]) == 2
    item = content["training"][0]
    assert len(item["condition"]) == 9 and item["condition"][0] > 0
    image = nib.load(str(prepared.parent / item["image"]))
    assert image.shape == (32, 32, 16)
    assert (prepared.parent / "tumours.csv").is_file() and (prepared.parent / "tumours_normaliser.json").is_file()


def test_both_stages_save_what_inference_needs(trained):
    models = trained / "models"
    expected = ["model_autoencoder.pt", "model_autoencoder_best.pt", "model.pt", "latent_scaler.json", "grid.json"]
    expected += ["training_conditions.json", "autoencoder_checkpoint_epoch=2.pt", "diffusion_checkpoint_epoch=2.pt"]
    for name in expected:
        assert (models / name).is_file(), name
    saved = read_json(models / "training_conditions.json")
    assert saved["feature_names"] == list(TUMOUR_FEATURE_NAMES) and len(saved["training_vectors"]) == 4
    assert read_json(models / "grid.json")["shape"] == [32, 32, 16]


def test_mlflow_records_the_autoencoder_loss_and_validation_psnr(trained):
    client = mlflow_client(trained)
    (run_,) = runs_named(client, "train_autoencoder_")
    psnr = [m.value for m in client.get_metric_history(run_.info.run_id, "val_psnr")]
    assert len(psnr) == 2 and all(np.isfinite(psnr))
    assert client.get_metric_history(run_.info.run_id, "train_loss")


def test_inference_writes_pairs_with_requested_and_achieved_features(trained, tmp_path):
    vector = "[0.5,0.5,0.8,0.5,0.5,0.5,0.3,0.3,0.3]"
    done = run(trained, INFERENCE, *TINY, "--num_samples", "2", "--num_inference_steps", "3", "--conditions", vector,
               "--output_dir", str(tmp_path / "pairs"), "--tracking", "mlflow")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_csv(tmp_path / "pairs" / "manifest.csv")
    assert [r["image"] for r in rows] == ["images/pair_0000.nii.gz", "images/pair_0001.nii.gz"]
    assert [float(r["requested_volume"]) for r in rows] == [0.5, 0.5]
    assert {r["sampler"] for r in rows} == {"ddim"} and all(float(r["seconds"]) > 0 for r in rows)
    for row in rows:
        image, label = (
            nib.load(str(tmp_path / "pairs" / row["image"])),
            nib.load(str(tmp_path / "pairs" / row["label"])),
        )
        values, mask = np.asarray(image.dataobj), np.asarray(label.dataobj)
        assert values.shape == mask.shape == (32, 32, 16)
        assert values.min() >= -1.0 and values.max() <= 1.0 and set(np.unique(mask)) <= {0, 1}
        np.testing.assert_allclose(image.affine, label.affine)
        assert int(row["tumour_voxels"]) == int(mask.sum()) and int(row["removed_voxels"]) >= 0
        assert ndimage.label(mask, structure=np.ones((3, 3, 3)))[1] <= 1  # the largest piece only
    assert (tmp_path / "pairs" / "mosaic.png").is_file()
    client = mlflow_client(trained)
    (job,) = runs_named(client, "inference_")
    assert job.data.metrics["num_samples"] == 2.0 and "seconds_per_volume" in job.data.metrics
    assert {"mosaic.png", "manifest.csv"} <= {a.path for a in client.list_artifacts(job.info.run_id)}
    # the fast path (bf16 autocast, channels-last) against these fp32 pairs: same seed and noise
    fast = run(trained, INFERENCE, *TINY, "--num_samples", "2", "--num_inference_steps", "3", "--conditions", vector,
               "--output_dir", str(tmp_path / "fast"), "--precision", "bf16", "--channels_last", "true")  # fmt: skip
    assert fast.returncode == 0, fast.stderr[-3000:]
    assert "fast path: bf16, channels-last" in fast.stdout
    result = compare_outputs(tmp_path / "pairs", tmp_path / "fast", data_range=2.0)
    assert result["samples"] == 2.0 and result["psnr_min"] >= 35.0 and result["dice_min"] >= 0.9, result


def test_guided_ddpm_sampling_with_random_consistent_conditions(trained, tmp_path):
    done = run(trained, INFERENCE, *TINY, "--num_samples", "3", "--sampler", "ddpm", "--num_inference_steps", "4",
               "--guidance_scale", "3.0", "--output_dir", str(tmp_path / "pairs"))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_csv(tmp_path / "pairs" / "manifest.csv")
    assert len(rows) == 3 and {r["sampler"] for r in rows} == {"ddpm"}
    volumes = [float(r["requested_volume"]) for r in rows]
    assert len(set(volumes)) == 3  # drawn, not repeated


def test_autoencoder_training_resumes_from_its_last_checkpoint(trained, prepared):
    done = run(trained, AUTOENCODER, "--datalist", str(prepared), *TINY, "--autoencoder_epochs", "3",
               "--val_interval", "10")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "Restored all variables from" in log and "Epoch[2]" not in log.split("Restored all variables from")[1]
    assert (trained / "models" / "autoencoder_checkpoint_epoch=3.pt").is_file()


def test_both_multi_gpu_overlays_run_under_torchrun_with_two_cpu_processes(prepared, tmp_path):
    folder = copy_bundle(tmp_path)
    done = run(folder, [*AUTOENCODER, "configs/multi_gpu_train_autoencoder.yaml"], "--datalist", str(prepared), *TINY,
               "--autoencoder_epochs", "1", "--val_interval", "10", torchrun=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    done = run(folder, [*DIFFUSION, "configs/multi_gpu_train_diffusion.yaml"], "--datalist", str(prepared), *TINY,
               "--diffusion_epochs", "1", torchrun=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "models" / "model.pt").is_file() and (folder / "models" / "training_conditions.json").is_file()


def test_wrong_condition_vector_length_is_refused(trained, tmp_path):
    done = run(trained, INFERENCE, *TINY, "--conditions", "[0.5,0.5,0.8]", "--output_dir", str(tmp_path / "x"))
    assert_one_line_failure(done, "conditions: a tumour condition vector needs 9 values")
    assert "got 3" in done.stderr
    assert not (tmp_path / "x" / "manifest.csv").exists()


def test_training_refuses_unprepared_images(prepared, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(prepared.parent, copy)
    image_file = copy / read_json(prepared)["training"][1]["image"]
    image = nib.load(str(image_file))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * 100.0, image.affine), str(image_file))
    done = run(copy_bundle(tmp_path / "bundle"), AUTOENCODER, "--datalist", str(copy / "datalist.json"), *TINY,
               "--autoencoder_epochs", "1")  # fmt: skip
    assert_one_line_failure(done, f"{image_file}: intensities outside [-1, 1]")


def test_table1_rows_for_sbldm_and_the_3d_ldm_baseline(trained, prepared):
    evaluate = ["configs/inference.yaml", "configs/evaluate.yaml"]
    common = ["--datalist", str(prepared), *TINY, "--num_samples", "2", "--num_inference_steps", "2"]
    done = run(trained, [*evaluate, DEMO], *common)
    assert done.returncode == 0, done.stderr[-3000:]
    baseline = "configs/baseline_3d_ldm.yaml"
    for stages, epochs in ((AUTOENCODER[:1], "--autoencoder_epochs"), (DIFFUSION[:2], "--diffusion_epochs")):
        done = run(trained, [*stages, baseline, DEMO], "--datalist", str(prepared), *TINY, epochs, "1")
        assert done.returncode == 0, done.stderr[-3000:]
    assert (trained / "models_3d_ldm" / "model.pt").is_file()
    done = run(trained, [*evaluate, baseline, DEMO], *common)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = read_csv(trained / "eval" / "table1.csv")
    assert [(r["method"], r["sampler"], r["steps"]) for r in rows] == [("SBLDM", "ddim", "2"), ("3D-LDM", "ddim", "2")]
    for row in rows:
        assert 0 < float(row["psnr"]) < 60 and -1 <= float(row["ssim"]) <= 1 and float(row["params_m"]) > 0
        assert float(row["seconds_per_volume"]) > 0 and row["num_samples"] == "2"
    table = (trained / "eval" / "table1.md").read_text()
    assert "| SBLDM | ddim | 2 |" in table and "| 3D-LDM | ddim | 2 |" in table and "SBLDM (DDPM) | 21.466" in table


def test_monai_bundle_properties_hold_for_every_train_and_infer_config(trained, prepared):
    """``ConfigWorkflow.check_properties()`` finds every required property (and no wrong optional ID)."""
    values = {"datalist": str(prepared), **cli_values(TINY)}
    stages = (("train", AUTOENCODER), ("train", DIFFUSION), ("infer", INFERENCE),
              ("train", ["configs/train_autoencoder.yaml", "configs/baseline_3d_ldm.yaml", DEMO]),
              ("infer", ["configs/inference.yaml", "configs/evaluate.yaml", DEMO]))  # fmt: skip
    for workflow_type, configs in stages:
        assert missing_bundle_properties(trained, configs, workflow_type, **values) == [], configs


def test_the_3d_ldm_baseline_batches_whole_volumes_whatever_the_presets_slice_batch():
    """A preset's ``autoencoder_batch_size`` counts slices; the baseline's volumes have their own batch."""
    from monai.bundle import ConfigParser

    folder = Path(__file__).resolve().parents[1] / "bundles" / "slice_based_ldm_brats"
    stage = str(folder / "configs" / "train_autoencoder.yaml")
    overlay, preset = str(folder / "configs" / "baseline_3d_ldm.yaml"), str(folder / DEMO)
    batches = {}
    for name, files in {"slices": [stage, preset], "volumes": [stage, overlay, preset]}.items():
        parser = ConfigParser()
        parser.read_config(files)
        batches[name] = (parser.get_parsed_content("batch_size_of_inputs"), parser["train"]["dataloader"]["batch_size"])
    assert batches == {"slices": (16, "@batch_size_of_inputs"), "volumes": (1, "@batch_size_of_inputs")}
