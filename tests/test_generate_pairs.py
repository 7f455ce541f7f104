"""scripts/generate_pairs.py: the mask bundle then the SPADE bundle, as one command (tiny trained copies)."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from conftest import ROOT, run_script
from conftest import bundle_run as run
from shared.demo.dataset import write_brain_dataset
from shared.io import read_csv

pytestmark = pytest.mark.slow  # trains through bundle runs (pytest -m "not slow" skips them)

TINY_MASK = {"autoencoder_channels": [8, 8, 8], "diffusion_channels": [8, 8, 8], "diffusion_head_channels": [0, 0, 8]}
TINY_SPADE = {**TINY_MASK, "spade_channels": 8, "discriminator_channels": 8}


def _args(overrides: dict) -> list[str]:
    return [item for key, value in overrides.items() for item in (f"--{key}", repr(value))]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Copies of both bundles, each trained for an epoch per stage on six tiny demo brains."""
    root = tmp_path_factory.mktemp("chain")
    datalist = write_brain_dataset(root / "data", n_cases=6, shape=(32, 32, 32), validation_fraction=0.34)
    trained = {}
    for name, tiny in (("ventricle_mask_ldm", TINY_MASK), ("spade_mri_ldm", TINY_SPADE)):
        folder = root / name
        shutil.copytree(ROOT / "bundles" / name / "configs", folder / "configs")
        common = ["--datalist", str(datalist), *_args(tiny)]
        stages = ["configs/train_autoencoder.yaml", "configs/presets/demo.yaml"]
        done = run(folder, stages, *common, "--autoencoder_epochs", "1")
        assert done.returncode == 0, done.stderr[-3000:]
        stages.insert(1, "configs/train_diffusion.yaml")
        done = run(folder, stages, *common, "--diffusion_epochs", "1")
        assert done.returncode == 0, done.stderr[-3000:]
        trained[name] = folder
    return trained


def test_one_command_makes_labelled_pairs_with_the_requested_conditions(bundles, tmp_path):
    done = run_script(
        "generate_pairs.py", "--output_dir", str(tmp_path / "pairs"), "--num_samples", "2",
        "--conditions", "[0.2,1.1]", "--mask_steps", "2", "--image_steps", "2", "--preset", "demo",
        "--mask_bundle", str(bundles["ventricle_mask_ldm"]), "--spade_bundle", str(bundles["spade_mri_ldm"]),
        "--mask_overrides", repr(TINY_MASK), "--spade_overrides", repr(TINY_SPADE),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_csv(tmp_path / "pairs" / "manifest.csv")
    assert [float(r["requested_c"]) for r in rows] == [0.2, 1.1]
    assert [r["label"] for r in rows] == ["labels/pair_0000.nii.gz", "labels/pair_0001.nii.gz"]
    for row in rows:
        image = nib.load(str(tmp_path / "pairs" / row["image"]))
        label = nib.load(str(tmp_path / "pairs" / row["label"]))
        np.testing.assert_allclose(image.affine, label.affine, atol=1e-6)
        assert image.shape == label.shape == (32, 32, 32)
    assert (tmp_path / "pairs" / "mosaic.png").is_file() and (
        tmp_path / "pairs" / "label_maps" / "manifest.csv"
    ).is_file()
    assert "2 labelled pairs" in done.stderr


def test_a_failing_stage_stops_with_one_line_naming_the_bundle(bundles, tmp_path):
    done = run_script(
        "generate_pairs.py", "--output_dir", str(tmp_path / "pairs"), "--num_samples", "1",
        "--conditions", "[0.5,'big']", "--preset", "demo", "--mask_bundle", str(bundles["ventricle_mask_ldm"]),
        "--spade_bundle", str(bundles["spade_mri_ldm"]), "--mask_overrides", repr(TINY_MASK),
    )  # fmt: skip
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {bundles['ventricle_mask_ldm']}: label maps (ventricle_mask_ldm) failed:")
    assert "conditions: c values must be numbers, got 'big'" in last
    assert "Traceback" not in done.stderr  # the bundle run printed its one line, and the command shows it


def test_bundle_folders_and_presets_are_checked_first(tmp_path):
    done = run_script("generate_pairs.py", "--output_dir", str(tmp_path / "p"), "--mask_bundle", str(tmp_path))
    assert done.returncode == 2 and f"error: {tmp_path}: not a bundle folder (no configs/inference.yaml)" in done.stderr
    done = run_script("generate_pairs.py", "--output_dir", str(tmp_path / "p"), "--preset", "nope")
    assert done.returncode == 2 and "no preset 'nope' (configs/presets/nope.yaml)" in done.stderr


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on 127.0.0.1 with a SQLite store; yields its URI; stopped by its PID."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
               "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"]  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers, by the PID it was started with
        server.wait(timeout=60)
        log.close()


def test_training_and_chained_generation_are_tracked_on_an_mlflow_server(bundles, mlflow_server, tmp_path):
    """Recipe parameters, every loss per iteration and epoch, final weights, executed config, nested chain."""
    import mlflow

    folder = bundles["ventricle_mask_ldm"]
    datalist = folder.parent / "data" / "datalist.json"
    stages = ["configs/train_autoencoder.yaml", "configs/presets/demo.yaml"]
    tracking = ["--tracking", "mlflow", "--tracking_uri", mlflow_server]
    done = run(folder, stages, "--datalist", str(datalist), *_args(TINY_MASK), "--autoencoder_epochs", "2",
               "--ckpt_dir", str(tmp_path / "models"), *tracking)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("monai_experiment")
    (training,) = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name.startswith("train_")]
    params = training.data.params
    assert params["autoencoder_channels"] == "[8, 8, 8]" and params["autoencoder_lr"] == "0.001"
    assert params["autoencoder_epochs"] == "2" and "seed" in params
    run_id = training.info.run_id
    iterations = client.get_metric_history(run_id, "iteration_loss")
    assert len(iterations) == 2 * 2  # 4 training cases, batch 2: two iterations per epoch
    assert [m.step for m in client.get_metric_history(run_id, "epoch_loss")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert any(path.startswith("config_") and path.endswith(".json") for path in artifacts), artifacts
    assert [a.path for a in client.list_artifacts(run_id, "models")] == ["models/model_autoencoder.pt"]

    done = run_script(
        "generate_pairs.py", "--output_dir", str(tmp_path / "pairs"), "--num_samples", "2", "--mask_steps", "2",
        "--image_steps", "2", "--preset", "demo", "--mask_bundle", str(folder),
        "--spade_bundle", str(bundles["spade_mri_ldm"]), "--mask_overrides", repr(TINY_MASK),
        "--spade_overrides", repr(TINY_SPADE), "--tracking_uri", mlflow_server,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name.startswith("generate_pairs_")]
    assert parent.info.status == "FINISHED" and parent.data.params["num_samples"] == "2"
    assert "manifest.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["stage"] for r in children) == ["inference", "inference"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert {r.data.params["num_inference_steps"] for r in children} == {"2"}
