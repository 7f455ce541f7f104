"""The spade_mri_ldm bundle run as users run it: `python -m monai.bundle run` from its folder.

A copy of the bundle's configs trains on tiny demo pairs (32^3) in a temporary folder. The
module-scoped run (autoencoder, 3 epochs, GAN after a 1-epoch warm-up, --tracking mlflow)
serves the weight, tracking and torchrun tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

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
from shared.demo.dataset import write_brain_dataset
from shared.io import read_csv, read_json

pytestmark = pytest.mark.slow  # trains through bundle runs (pytest -m "not slow" skips them)

DEMO = "configs/presets/demo.yaml"
TINY = ["--autoencoder_channels", "[8,8,8]", "--spade_channels", "8", "--discriminator_channels", "8"]
AUTOENCODER = ["configs/train_autoencoder.yaml", DEMO]


def copy_bundle(target: Path) -> Path:
    return copy_bundle_configs("spade_mri_ldm", target)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Six tiny demo brains (image + label), two of them for validation."""
    root = tmp_path_factory.mktemp("spade_data")
    return write_brain_dataset(root, n_cases=6, shape=(32, 32, 32), validation_fraction=0.34)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data) -> Path:
    folder = copy_bundle(tmp_path_factory.mktemp("spade_bundle"))
    done = run(
        folder, AUTOENCODER, "--datalist", str(data), *TINY, "--autoencoder_epochs", "3", "--adv_warmup_epochs", "1",
        "--val_interval", "1", "--tracking", "mlflow",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def test_autoencoder_training_saves_both_networks_and_the_grid(trained):
    models = trained / "models"
    for name in ("model_autoencoder.pt", "model_autoencoder_best.pt", "grid.json", "autoencoder_checkpoint_epoch=3.pt"):
        assert (models / name).is_file(), name
    import torch

    final = torch.load(models / "model_autoencoder.pt", map_location="cpu", weights_only=True)
    assert {"model", "discriminator"} <= set(final)  # generator and discriminator weights
    assert read_json(models / "grid.json")["shape"] == [32, 32, 32]


def test_mlflow_records_generator_and_discriminator_losses(trained):
    client = mlflow_client(trained)
    (run_,) = runs_named(client, "train_autoencoder_")
    names = ("epoch_g_loss", "epoch_d_loss", "epoch_recon_loss", "epoch_adv_loss", "val_psnr", "train_loss")
    history = {name: [m.value for m in client.get_metric_history(run_.info.run_id, name)] for name in names}
    assert len(history["epoch_g_loss"]) == 3 and len(history["epoch_d_loss"]) == 3
    assert history["epoch_d_loss"][0] == 0.0 and history["epoch_adv_loss"][0] == 0.0  # warm-up epoch
    assert all(v > 0 for v in history["epoch_d_loss"][1:] + history["epoch_adv_loss"][1:])  # GAN on after it
    assert len(history["val_psnr"]) == 3 and len(history["train_loss"]) >= 3  # per-iteration generator loss


def test_training_resumes_from_its_last_checkpoint(trained, data):
    done = run(trained, AUTOENCODER, "--datalist", str(data), *TINY, "--autoencoder_epochs", "4",
               "--adv_warmup_epochs", "1", "--val_interval", "10")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "Restored all variables from" in log and "Epoch[3]" not in log.split("Restored all variables from")[1]
    assert (trained / "models" / "autoencoder_checkpoint_epoch=4.pt").is_file()


def test_multi_gpu_overlay_runs_under_torchrun_with_two_cpu_processes(data, tmp_path):
    folder = copy_bundle(tmp_path)
    done = run(
        folder, [*AUTOENCODER, "configs/multi_gpu_train_autoencoder.yaml"], "--datalist", str(data), *TINY,
        "--autoencoder_epochs", "2", "--adv_warmup_epochs", "1", "--val_interval", "10", torchrun=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "models" / "model_autoencoder.pt").is_file()
    assert done.stdout.count("epoch_d_loss") >= 2  # both epochs logged once (rank 0), the second with the GAN on


def _corrupt_pair(data: Path, tmp_path: Path, change: str) -> tuple[Path, Path]:
    """A copy of the demo data where one training pair is broken; returns (datalist, broken file)."""
    copy = tmp_path / "data"
    shutil.copytree(data.parent, copy)
    label = copy / "labels" / "brain_001.nii.gz"
    image = nib.load(str(label))
    array, affine = np.asarray(image.dataobj).copy(), image.affine.copy()
    if change == "labels":
        array[0, 0, 0] = 99
    elif change == "shape":
        array = array[:-2]
    elif change == "affine":
        affine[0, 3] += 5.0
    nib.save(nib.Nifti1Image(array, affine), str(label))
    return copy / "datalist.json", label


@pytest.mark.parametrize(
    "change, message",
    [
        ("labels", "labels outside the declared set: 99"),
        ("shape", "shape (30, 32, 32) differs from brain_001.nii.gz shape (32, 32, 32)"),
        ("affine", "affine differs from brain_001.nii.gz (max difference 5 mm)"),
    ],
)
def test_bad_training_pairs_are_named(data, tmp_path, change, message):
    datalist, broken = _corrupt_pair(data, tmp_path, change)
    done = run(copy_bundle(tmp_path / "bundle"), AUTOENCODER, "--datalist", str(datalist), *TINY,
               "--autoencoder_epochs", "1")  # fmt: skip
    assert done.returncode != 0
    assert f"{broken}: {message}" in done.stderr


TINY_UNET = ["--diffusion_channels", "[8,8,8]", "--diffusion_head_channels", "[0,0,8]"]
INFERENCE = ["configs/inference.yaml", DEMO]


@pytest.fixture(scope="module")
def trained_both(trained, data) -> Path:
    """The module's bundle copy with the diffusion stage trained for one epoch too."""
    done = run(trained, [*AUTOENCODER[:1], "configs/train_diffusion.yaml", DEMO], "--datalist", str(data), *TINY,
               *TINY_UNET, "--diffusion_epochs", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (trained / "models" / "model.pt").is_file() and (trained / "models" / "latent_scaler.json").is_file()
    return trained


def mask_bundle_output(data: Path, folder: Path) -> Path:
    """A folder laid out like ventricle_mask_ldm's output: mask_XXXX.nii.gz and its manifest.csv."""
    from shared.io import write_csv
    from shared.sampling.mask_generation import MANIFEST_COLUMNS

    folder.mkdir(parents=True)
    rows = []
    for i, source in enumerate(sorted((data.parent / "labels").glob("*.nii.gz"))[:2]):
        shutil.copy(source, folder / f"mask_{i:04d}.nii.gz")
        rows.append({column: 0.5 * i for column in MANIFEST_COLUMNS} | {"file": f"mask_{i:04d}.nii.gz"})
    write_csv(folder / "manifest.csv", rows, MANIFEST_COLUMNS)
    return folder


def test_inference_turns_the_mask_bundles_output_into_labelled_pairs(trained_both, data, tmp_path):
    masks = mask_bundle_output(data, tmp_path / "masks")
    done = run(trained_both, INFERENCE, *TINY, *TINY_UNET, "--label_maps", str(masks), "--num_inference_steps", "2",
               "--output_dir", str(tmp_path / "pairs"))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_csv(tmp_path / "pairs" / "manifest.csv")
    assert [r["image"] for r in rows] == ["images/pair_0000.nii.gz", "images/pair_0001.nii.gz"]
    assert [float(r["requested_c"]) for r in rows] == [0.0, 0.5]  # the mask manifest's columns travel on
    for row in rows:
        image = nib.load(str(tmp_path / "pairs" / row["image"]))
        label = nib.load(str(tmp_path / "pairs" / row["label"]))
        source = nib.load(row["source_label"])
        np.testing.assert_array_equal(np.asarray(label.dataobj), np.asarray(source.dataobj))
        np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)
        np.testing.assert_allclose(label.affine, source.affine, atol=1e-5)
        values = np.asarray(image.dataobj)
        assert values.shape == (32, 32, 32) and values.min() >= 0.0 and values.max() <= 1.0
    assert (tmp_path / "pairs" / "mosaic.png").is_file()
    # the fast path (bf16 autocast, channels-last) against these fp32 images: same seed and noise
    fast = run(trained_both, INFERENCE, *TINY, *TINY_UNET, "--label_maps", str(masks), "--num_inference_steps", "2",
               "--output_dir", str(tmp_path / "fast"), "--precision", "bf16", "--channels_last", "true")  # fmt: skip
    assert fast.returncode == 0, fast.stderr[-3000:]
    assert "fast path: bf16, channels-last" in fast.stdout
    result = compare_outputs(tmp_path / "pairs", tmp_path / "fast", data_range=1.0)
    assert result["samples"] == 2.0 and result["psnr_min"] >= 35.0 and result["dice_min"] == 1.0, result


def test_inference_refuses_bad_label_maps_and_missing_statistics(trained_both, data, tmp_path):
    (tmp_path / "empty").mkdir()
    done = run(trained_both, INFERENCE, *TINY, *TINY_UNET, "--label_maps", str(tmp_path / "empty"))
    assert_one_line_failure(done, f"{tmp_path / 'empty'}: no volume files")

    bad = tmp_path / "bad" / "odd.nii.gz"
    bad.parent.mkdir()
    source = nib.load(str(sorted((data.parent / "labels").glob("*.nii.gz"))[0]))
    labels = np.asarray(source.dataobj).copy()
    labels[1, 1, 1] = 99
    nib.save(nib.Nifti1Image(labels, source.affine), str(bad))
    done = run(trained_both, INFERENCE, *TINY, *TINY_UNET, "--label_maps", str(bad.parent))
    assert_one_line_failure(done, f"{bad}: labels outside the declared set: 99")

    folder = copy_bundle(tmp_path / "no_stats")
    shutil.copytree(trained_both / "models", folder / "models")
    (folder / "models" / "latent_scaler.json").unlink()
    done = run(folder, INFERENCE, *TINY, *TINY_UNET, "--label_maps", str(bad.parent))
    assert_one_line_failure(done, "latent_scaler.json: missing; train both stages first")


def test_diffusion_overlay_runs_under_torchrun_with_two_cpu_processes(trained_both, data, tmp_path):
    folder = copy_bundle(tmp_path)
    shutil.copytree(trained_both / "models", folder / "models")
    stages = [*AUTOENCODER[:1], "configs/train_diffusion.yaml", DEMO, "configs/multi_gpu_train_diffusion.yaml"]
    for old in (folder / "models").glob("diffusion_checkpoint_epoch=*.pt"):
        old.unlink()  # start this stage afresh
    done = run(folder, stages, "--datalist", str(data), *TINY, *TINY_UNET, "--diffusion_epochs", "1", torchrun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "models" / "diffusion_checkpoint_epoch=1.pt").is_file()


def test_monai_bundle_properties_hold_for_every_train_and_infer_config(trained_both, data, tmp_path):
    """``ConfigWorkflow.check_properties()`` finds every required property (and no wrong optional ID)."""
    values = {"datalist": str(data), "label_maps": str(mask_bundle_output(data, tmp_path / "masks")),
              **cli_values(TINY + TINY_UNET)}  # fmt: skip
    for workflow_type, configs in (("train", AUTOENCODER), ("train", [AUTOENCODER[0], "configs/train_diffusion.yaml",
                                   DEMO]), ("infer", INFERENCE)):  # fmt: skip
        assert missing_bundle_properties(trained_both, configs, workflow_type, **values) == [], configs
