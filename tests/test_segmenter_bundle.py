"""A trained nnU-Net model exported as a MONAI bundle segments like nnU-Net's own predictor.

One module-scoped nnU-Net (demo brains at 32^3, quarter width, 40 AdamW iterations) predicts its
hold-out with ``nnUNetPredictor``; the exported bundle, run by a Python without this project,
must agree case by case (Dice >= 0.99).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import BARE_ENV, ROOT, run_script
from shared.demo.dataset import write_brain_dataset
from shared.export.segmenter_export import export_segmenter
from shared.io import InputError, read_json
from shared.segmentation.nnunet_dataset import assemble_dataset

pytestmark = pytest.mark.slow  # trains through bundle runs (pytest -m "not slow" skips them)

SCHEMA = ROOT.parent / "shared" / "model-zoo" / "meta_schema_20240725.json"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """``nnUNetTrainer__nnUNetPlans__3d_fullres`` of a small trained model, with ``predictions_Ts``."""
    root = tmp_path_factory.mktemp("segmenter")
    real = write_brain_dataset(root / "real", 6, (32, 32, 32), None, 0, validation_fraction=0.0)
    write_brain_dataset(root / "test", 3, (32, 32, 32), None, 11, validation_fraction=0.0)
    nnunet = root / "nnunet"
    assemble_dataset("real", 701, "SegBundle", real=real, test=root / "test", labels="ventricles",
                     nnunet_raw=nnunet / "nnUNet_raw", progress=False)  # fmt: skip
    done = run_script(
        "train_segmentation.py", "--dataset_id", "701", "--nnunet_root", str(nnunet), "--epochs", "1",
        "--iterations_per_epoch", "40", "--val_iterations_per_epoch", "1", "--width_factor", "0.25",
        "--optimizer", "adamw", "--initial_lr", "0.003", "--seed", "0", "--augmentation_processes", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return nnunet / "nnUNet_results" / "Dataset701_SegBundle" / "nnUNetTrainer__nnUNetPlans__3d_fullres"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    both = (a > 0).sum() + (b > 0).sum()
    return 1.0 if both == 0 else 2.0 * ((a > 0) & (b > 0)).sum() / both


def test_exported_segmenter_matches_nnunets_predictor_case_by_case(model, bare_python, tmp_path):
    summary = export_segmenter(model, tmp_path / "segmenter.zip")
    assert summary["configuration"] == "3d_fullres" and summary["patch_size"] == [32, 32, 32]
    with zipfile.ZipFile(tmp_path / "segmenter.zip") as archive:
        archive.extractall(tmp_path / "unpacked")
    bundle = tmp_path / "unpacked" / "nnunet_segmenter"
    metadata = read_json(bundle / "configs" / "metadata.json")
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "ventricles"}
    assert "nnunetv2" in metadata["required_packages_version"]
    images = model.parents[2] / "nnUNet_raw" / "Dataset701_SegBundle" / "imagesTs"
    command = [str(bare_python), "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml",
               "--dataset_dir", str(images), "--output_dir", str(tmp_path / "out"), "--device", "cpu"]  # fmt: skip
    done = subprocess.run(command, cwd=bundle, capture_output=True, text=True, timeout=600, env=BARE_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = sorted((model / "predictions_Ts").glob("*.nii.gz"))
    assert len(reference) == 3
    for path in reference:
        ours = nib.load(tmp_path / "out" / path.name.replace(".nii.gz", "_0000_seg.nii.gz"))
        theirs = nib.load(path)
        np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-4)
        assert ours.shape == theirs.shape
        assert _dice(np.asarray(ours.dataobj), np.asarray(theirs.dataobj)) >= 0.99, path.name

    check = (
        "from monai.bundle import ConfigWorkflow\n"
        "w = ConfigWorkflow(config_file='configs/inference.yaml', meta_file='configs/metadata.json',"
        f" workflow_type='infer', dataset_dir={str(images)!r})\n"
        "w.initialize()\nprint('missing:', w.check_properties())"
    )  # the bundle's own scripts/ package, as MONAI Label would load it
    done = subprocess.run([str(bare_python), "-c", check], cwd=bundle, capture_output=True, text=True, env=BARE_ENV)
    assert "missing: []" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    export = [str(bare_python), "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath",
              str(tmp_path / "segmenter.ts"), "--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json",
              "--config_file", "configs/inference.yaml", "--use_trace", "True",
              "--input_shape", "[1,1,32,32,32]"]  # fmt: skip
    done = subprocess.run(export, cwd=bundle, capture_output=True, text=True, timeout=600, env=BARE_ENV)
    assert done.returncode == 0, done.stderr[-3000:]  # TorchScript by tracing (nnU-Net's network does not script)
    verify = [str(bare_python), "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file",
              "configs/metadata.json", "--config_file", "configs/inference.yaml", "--device", "cpu"]  # fmt: skip
    done = subprocess.run(verify, cwd=bundle, capture_output=True, text=True, timeout=600, env=BARE_ENV)
    assert done.returncode == 0 and "verified with no error" in done.stdout + done.stderr, done.stderr[-3000:]
    if SCHEMA.is_file():
        from monai.bundle import verify_metadata

        verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_export_refuses_a_folder_that_is_not_a_trained_model(tmp_path):
    with pytest.raises(InputError, match=r"expected an nnU-Net model folder named <trainer>__<plans>__<configuration>"):
        export_segmenter(tmp_path, tmp_path / "x.zip")
    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir()
    with pytest.raises(InputError, match=r"plans.json: missing"):
        export_segmenter(folder, tmp_path / "x.zip")
    done = run_script("export_segmenter.py", str(folder), "--output", str(tmp_path / "x.zip"))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and not (tmp_path / "x.zip").exists()


#: MONAI Label's own import path, made by scripts/setup_env.sh (scripts/requirements-monailabel.txt).
MONAI_LABEL = Path(sys.prefix) / "monailabel"


def test_monai_label_serves_the_exported_segmenter_through_its_rest_api(model, bare_python, tmp_path):
    """``monailabel start_server`` with the bundle's app on 127.0.0.1; one image segmented over REST."""
    assert (MONAI_LABEL / "monailabel").is_dir(), f"{MONAI_LABEL}: missing, run scripts/setup_env.sh"
    export_segmenter(model, tmp_path / "segmenter.zip")
    with zipfile.ZipFile(tmp_path / "segmenter.zip") as archive:
        archive.extractall(tmp_path / "unpacked")
    bundle = tmp_path / "unpacked" / "nnunet_segmenter"
    studies = tmp_path / "studies"
    studies.mkdir()
    image = sorted((model.parents[2] / "nnUNet_raw" / "Dataset701_SegBundle" / "imagesTs").glob("*.nii.gz"))[0]
    shutil.copyfile(image, studies / "case_000.nii.gz")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = ["--app", str(bundle / "monailabel_app"), "--studies", str(studies), "--conf", "bundle", str(bundle)]
    command = [
        str(bare_python),
        "-m",
        "monailabel.main",
        "start_server",
        *app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {**BARE_ENV, "PYTHONPATH": str(MONAI_LABEL), "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, cwd=bundle, stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(uri + "/info/", timeout=2) as answer:
                    info = json.loads(answer.read())
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        else:
            raise AssertionError("MONAI Label did not start: " + (tmp_path / "server.log").read_text()[-3000:])
        assert info["models"]["segmenter"]["labels"] == {"ventricles": 1}
        request = urllib.request.Request(uri + "/infer/segmenter?image=case_000&output=image", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=300) as answer:
            (tmp_path / "label.nii.gz").write_bytes(answer.read())
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server, by the PID it was started with
        server.wait(timeout=60)
        log.close()
    served = nib.load(tmp_path / "label.nii.gz")
    reference = nib.load(model / "predictions_Ts" / image.name.replace("_0000.nii.gz", ".nii.gz"))
    assert served.shape == reference.shape
    np.testing.assert_allclose(served.affine, reference.affine, atol=1e-4)
    assert _dice(np.asarray(served.dataobj), np.asarray(reference.dataobj)) >= 0.99
