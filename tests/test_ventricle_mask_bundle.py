"""The ventricle_mask_ldm bundle run as users run it: `python -m monai.bundle run` from its folder.

A copy of the bundle's configs runs in a temporary folder on tiny demo data (32^3), so the
repository is never written to. One module-scoped training run (autoencoder, then diffusion)
serves the inference and error tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import (
    ROOT,
    assert_one_line_failure,
    bundle_run,
    cli_values,
    copy_bundle_configs,
    missing_bundle_properties,
    mlflow_client,
    runs_named,
)
from shared.benchmarks.accuracy_guard import compare_outputs
from shared.demo.dataset import write_brain_dataset
from shared.io import read_csv, read_json
from shared.labels import SYNTHSEG_LABEL_IDS

pytestmark = pytest.mark.slow  # trains through bundle runs (pytest -m "not slow" skips them)

DEMO = "configs/presets/demo.yaml"
TINY = ["--autoencoder_channels", "[8,8,8]", "--diffusion_channels", "[8,8,8]", "--diffusion_head_channels", "[0,0,8]"]


def copy_bundle(target: Path) -> Path:
    return copy_bundle_configs("ventricle_mask_ldm", target)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A bundle copy with both stages trained for one epoch on six tiny demo brains."""
    root = tmp_path_factory.mktemp("mask_bundle")
    datalist = write_brain_dataset(root / "data", n_cases=6, shape=(32, 32, 32), validation_fraction=0.34)
    folder = copy_bundle(root / "bundle")
    common = ["--datalist", str(datalist), *TINY]
    done = bundle_run(
        folder,
        ["configs/train_autoencoder.yaml", DEMO],
        *common,
        "--autoencoder_epochs",
        "2",
        "--val_interval",
        "1",
        "--tracking",
        "mlflow",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    done = bundle_run(
        folder,
        ["configs/train_autoencoder.yaml", "configs/train_diffusion.yaml", DEMO],
        *common,
        "--diffusion_epochs",
        "1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def test_training_saves_weights_and_the_statistics_inference_needs(trained):
    models = trained / "models"
    for name in ("model_autoencoder.pt", "model.pt", "ventricle_normaliser.json", "latent_scaler.json", "grid.json"):
        assert (models / name).is_file(), name
    normaliser = read_json(models / "ventricle_normaliser.json")
    assert 0 < normaliser["minimum"] < normaliser["maximum"] < 1
    assert read_json(models / "grid.json")["shape"] == [32, 32, 32]
    assert (trained / "eval").is_dir()  # TensorBoard events


def test_mlflow_tracking_records_losses_and_validation_dice(trained):
    client = mlflow_client(trained)
    runs = runs_named(client, "train_autoencoder_")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    losses = client.get_metric_history(runs[0].info.run_id, "train_loss")
    assert len(losses) >= 2 and all(np.isfinite(m.value) for m in losses)
    assert 0.0 <= runs[0].data.metrics["val_label_dice"] <= 1.0


def test_inference_writes_label_maps_manifest_and_mosaic(trained, tmp_path):
    done = bundle_run(
        trained,
        ["configs/inference.yaml", DEMO],
        *TINY,
        "--num_samples",
        "2",
        "--num_inference_steps",
        "2",
        "--conditions",
        "[0.1,1.4]",
        "--tracking",
        "mlflow",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = trained / "generated"
    rows = read_csv(out / "manifest.csv")
    assert [r["file"] for r in rows] == ["mask_0000.nii.gz", "mask_0001.nii.gz"]
    assert [float(r["requested_c"]) for r in rows] == [0.1, 1.4]
    assert "outside the training range" in done.stdout + done.stderr  # c = 1.4 extrapolates
    grid = read_json(trained / "models" / "grid.json")
    image = nib.load(str(out / "mask_0000.nii.gz"))
    np.testing.assert_allclose(image.affine, np.asarray(grid["affine"]), atol=1e-5)
    assert set(np.unique(np.asarray(image.dataobj)).tolist()) <= set(SYNTHSEG_LABEL_IDS)
    assert float(rows[0]["ventricle_ml"]) >= 0 and (out / "mosaic.png").is_file()
    # --tracking mlflow: summary metrics, and the mosaic and manifest as artifacts, in the training store
    client = mlflow_client(trained)
    runs = runs_named(client, "inference_")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.metrics["num_samples"] == 2.0
    assert "train_loss" not in runs[0].data.metrics  # not mixed into the training run
    mean_ml = np.mean([float(r["ventricle_ml"]) for r in rows])
    assert runs[0].data.metrics["mean_ventricle_ml"] == pytest.approx(mean_ml)
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"mosaic.png", "manifest.csv"} <= artifacts
    local = Path(client.download_artifacts(runs[0].info.run_id, "mosaic.png", str(out.parent / "downloaded")))
    assert local.read_bytes() == (out / "mosaic.png").read_bytes()
    # channels-last fp32 against these label maps: same seed and noise, same arithmetic in another layout
    fast = bundle_run(trained, ["configs/inference.yaml", DEMO], *TINY, "--num_samples", "2", "--num_inference_steps",
                      "2", "--conditions", "[0.1,1.4]", "--output_dir", str(tmp_path / "fast"),
                      "--channels_last", "true")  # fmt: skip
    assert fast.returncode == 0, fast.stderr[-3000:]
    assert "fast path: fp32, channels-last" in fast.stdout
    same = compare_outputs(out, tmp_path / "fast", images=None, labels="mask_*.nii.gz")
    assert same["samples"] == 2.0 and same["dice_min"] >= 0.99, same


def test_fast_path_values_of_the_inference_config_reach_the_sampler(monkeypatch):
    """The config's switches build the FastPath that generate_label_maps receives.

    (bf16 and decode tiles themselves: tests/test_fast_path.py on tiny networks.)
    """
    from monai.bundle import ConfigParser

    monkeypatch.chdir(ROOT / "bundles" / "ventricle_mask_ldm")  # the config names its siblings from the bundle root
    parser = ConfigParser()
    parser.read_config("configs/inference.yaml")
    parser.update({"precision": "bf16", "channels_last": True, "decode_roi": [4, 4, 4]})
    assert parser.get_parsed_content("fast_path").describe() == "bf16, channels-last, tiles [4, 4, 4]"
    assert parser["job"]["fast_path"] == "@fast_path" and parser["evaluator"]["job"] == "@job"


def test_balance_conditions_switches_training_to_inverse_frequency_sampling(trained):
    from monai.bundle import ConfigParser
    from torch.utils.data import WeightedRandomSampler

    def dataloader(balance: bool):
        parser = ConfigParser()
        stages = ("configs/train_autoencoder.yaml", "configs/train_diffusion.yaml", DEMO)
        parser.read_config([str(trained / c) for c in stages])
        parser.update({"bundle_root": str(trained), "datalist": str(trained.parent / "data" / "datalist.json")})
        parser.update({"balance_conditions": balance})
        return parser.get_parsed_content("diffusion_dataloader")

    assert dataloader(False).sampler.__class__.__name__ == "RandomSampler"  # plain shuffling
    loader = dataloader(True)
    assert isinstance(loader.sampler, WeightedRandomSampler)
    bins = np.floor(np.array([float(item["c"]) for item in loader.dataset]) / 0.1).astype(int)
    weights = loader.sampler.weights.numpy()
    per_bin = [weights[bins == b].sum() for b in np.unique(bins)]
    assert len(per_bin) >= 2 and np.allclose(per_bin, per_bin[0])  # every occupied bin equally likely


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--guidance_scale", "-1"], "guidance_scale: must be >= 0, got -1"),
        (["--num_inference_steps", "0"], "num_inference_steps: expected an integer >= 1, got 0"),
        (["--conditions", "[0.5,'big']"], "conditions: c values must be numbers, got 'big'"),
    ],
)
def test_inference_refuses_bad_settings(trained, overrides, message):
    done = bundle_run(trained, ["configs/inference.yaml", DEMO], *TINY, "--num_samples", "1", *overrides)
    assert_one_line_failure(done, message)


def test_inference_refuses_to_run_without_saved_statistics(trained, tmp_path):
    folder = copy_bundle(tmp_path)
    shutil.copytree(trained / "models", folder / "models")
    (folder / "models" / "ventricle_normaliser.json").unlink()
    done = bundle_run(folder, ["configs/inference.yaml", DEMO], *TINY, "--num_samples", "1")
    assert_one_line_failure(done, "ventricle_normaliser.json: missing; train both stages first")


def test_unknown_labels_in_training_data_are_named(tmp_path):
    datalist = write_brain_dataset(tmp_path / "data", n_cases=3, shape=(32, 32, 32), validation_fraction=0.34)
    bad = tmp_path / "data" / "labels" / "brain_001.nii.gz"
    image = nib.load(str(bad))
    labels = np.asarray(image.dataobj).copy()
    labels[0, 0, 0] = 99
    nib.save(nib.Nifti1Image(labels, image.affine), str(bad))
    done = bundle_run(
        copy_bundle(tmp_path / "bundle"),
        ["configs/train_autoencoder.yaml", DEMO],
        "--datalist",
        str(datalist),
        *TINY,
        "--autoencoder_epochs",
        "1",
    )
    assert done.returncode != 0
    assert f"{bad}: labels outside the declared set: 99" in done.stderr


def test_training_killed_mid_way_resumes_from_its_last_checkpoint(tmp_path):
    datalist = write_brain_dataset(tmp_path / "data", n_cases=3, shape=(32, 32, 32), validation_fraction=0.34)
    folder = copy_bundle(tmp_path / "bundle")
    args = ["--datalist", str(datalist), *TINY, "--val_interval", "10", "--autoencoder_epochs", "8"]
    # kill -9 once the second epoch's checkpoint is being written (MONAI writes in place, so it may be
    # half-written; the first is then still whole): no final weights; the rerun resumes and completes
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               f"['configs/train_autoencoder.yaml','{DEMO}']", *args]  # fmt: skip
    first = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    second_checkpoint = folder / "models" / "autoencoder_checkpoint_epoch=2.pt"
    while time.monotonic() < deadline and first.poll() is None and not second_checkpoint.exists():
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert list(folder.glob("models/autoencoder_checkpoint_epoch=*.pt"))
    assert not (folder / "models" / "model_autoencoder.pt").exists()
    second = bundle_run(folder, ["configs/train_autoencoder.yaml", DEMO], *args)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "Restored all variables from" in log and "Epoch[1]" not in log.split("Restored all variables from")[1]
    assert sorted(p.name for p in folder.glob("models/autoencoder_checkpoint_epoch=*.pt")) == [
        "autoencoder_checkpoint_epoch=8.pt"
    ]
    assert (folder / "models" / "model_autoencoder.pt").is_file()

    # the same folder with another architecture: refused, naming the checkpoint, before any epoch
    wider = ["--datalist", str(datalist), *TINY[:1], "[8,16,16]", *TINY[2:], "--val_interval", "10"]
    third = bundle_run(folder, ["configs/train_autoencoder.yaml", DEMO], *wider, "--autoencoder_epochs", "9")
    assert_one_line_failure(third, "models/autoencoder_checkpoint_epoch=8.pt: 'autoencoder' weight")
    assert "another architecture or config wrote it" in third.stderr
    assert (folder / "models" / "autoencoder_checkpoint_epoch=8.pt").is_file()


def torchrun(folder: Path, configs: list[str], *overrides: str) -> subprocess.CompletedProcess:
    return bundle_run(folder, configs, *overrides, torchrun=True)


def test_multi_gpu_overlays_run_under_torchrun_with_two_cpu_processes(trained, tmp_path):
    datalist = str(trained.parent / "data" / "datalist.json")
    folder = copy_bundle(tmp_path)
    done = torchrun(
        folder,
        ["configs/train_autoencoder.yaml", DEMO, "configs/multi_gpu_train_autoencoder.yaml"],
        "--datalist",
        datalist,
        *TINY,
        "--autoencoder_epochs",
        "1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "models" / "model_autoencoder.pt").is_file()
    done = torchrun(
        folder,
        [
            "configs/train_autoencoder.yaml",
            "configs/train_diffusion.yaml",
            DEMO,
            "configs/multi_gpu_train_diffusion.yaml",
        ],
        "--datalist",
        datalist,
        *TINY,
        "--diffusion_epochs",
        "1",
        "--balance_conditions",
        "true",  # DistributedWeightedRandomSampler across the two ranks
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("sampler: DistributedWeightedRandomSampler") == 2  # one line per rank
    assert (folder / "models" / "model.pt").is_file() and (folder / "models" / "latent_scaler.json").is_file()


def test_evaluation_writes_figure3_tables_and_spearman_per_guidance_scale(trained, tmp_path):
    folder = copy_bundle(tmp_path)
    shutil.copytree(trained / "models", folder / "models")
    done = bundle_run(
        folder, ["configs/inference.yaml", "configs/evaluate.yaml", DEMO], *TINY,
        "--real_datalist", str(trained.parent / "data" / "datalist.json"), "--c_grid", "[0.0,1.5]",
        "--guidance_scales", "[1.0,4.0]", "--samples_per_c", "1", "--num_inference_steps", "2", "--tracking", "mlflow",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = folder / "eval" / "figure3"
    assert [r["G"] for r in read_csv(out / "spearman.csv")] == ["1.0", "4.0"]
    table = read_csv(out / "figure3.csv")
    assert [(r["G"], r["c"], r["n"]) for r in table] == [
        ("1.0", "0.0", "1"),
        ("1.0", "1.5", "1"),
        ("4.0", "0.0", "1"),
        ("4.0", "1.5", "1"),
    ]
    assert (out / "figure3.png").is_file() and (out / "G4" / "manifest.csv").is_file()
    client = mlflow_client(folder)
    (run,) = runs_named(client, "evaluate_")
    for row in read_csv(out / "spearman.csv"):  # NaN when all volumes are equal; MLflow keeps NaN
        g = float(row["G"])
        assert run.data.metrics[f"spearman_rho_G{g:g}"] == pytest.approx(float(row["rho"]), nan_ok=True)
        assert row["n_c0to1"] == "1" and np.isnan(run.data.metrics[f"spearman_rho_c0to1_G{g:g}"])  # only c = 0
    assert {"figure3.png", "figure3.csv", "spearman.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_failed_job_ends_its_mlflow_run_as_failed(trained, tmp_path):
    folder = copy_bundle(tmp_path)
    shutil.copytree(trained / "models", folder / "models")
    args = ["--num_samples", "1", "--tracking", "mlflow"]
    refused = bundle_run(folder, ["configs/inference.yaml", DEMO], *TINY, *args, "--guidance_scale", "-1")
    assert refused.returncode != 0 and "guidance_scale: must be >= 0" in refused.stderr  # refused at parse time
    grid = folder / "models" / "grid.json"
    good = grid.read_text()
    grid.write_text("{not json")  # read inside the job, after its MLflow run has started
    failed = bundle_run(folder, ["configs/inference.yaml", DEMO], *TINY, *args, "--num_inference_steps", "2")
    assert failed.returncode != 0 and "grid.json" in failed.stderr
    grid.write_text(good)
    done = bundle_run(folder, ["configs/inference.yaml", DEMO], *TINY, *args, "--num_inference_steps", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = runs_named(mlflow_client(folder), "inference_")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]  # no run for the refusal; none reused


def test_monai_bundle_properties_hold_for_every_train_and_infer_config(trained):
    """``ConfigWorkflow.check_properties()`` finds every required property (and no wrong optional ID)."""
    values = {"datalist": str(trained.parent / "data" / "datalist.json"), **cli_values(TINY)}
    stages = {
        "train": [["configs/train_autoencoder.yaml", DEMO],
                  ["configs/train_autoencoder.yaml", "configs/train_diffusion.yaml", DEMO]],
        "infer": [["configs/inference.yaml", DEMO], ["configs/inference.yaml", "configs/evaluate.yaml", DEMO]],
    }  # fmt: skip
    for workflow_type, config_lists in stages.items():
        for configs in config_lists:
            assert missing_bundle_properties(trained, configs, workflow_type, **values) == [], configs
