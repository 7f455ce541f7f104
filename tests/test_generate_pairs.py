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
        "generate_pairs.py", "--output_dir", str(tmp_path / "pairs"), "--num_samples", "1", "--guidance_scale", "-1",
        "--preset", "demo", "--mask_bundle", str(bundles["ventricle_mask_ldm"]),
        "--spade_bundle", str(bundles["spade_mri_ldm"]), "--mask_overrides", repr(TINY_MASK),
    )  # fmt: skip
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {bundles['ventricle_mask_ldm']}: label maps (ventricle_mask_ldm) failed:")
    assert "guidance_scale: must be >= 0" in last


def test_bundle_folders_and_presets_are_checked_first(tmp_path):
    done = run_script("generate_pairs.py", "--output_dir", str(tmp_path / "p"), "--mask_bundle", str(tmp_path))
    assert done.returncode == 2 and f"error: {tmp_path}: not a bundle folder (no configs/inference.yaml)" in done.stderr
    done = run_script("generate_pairs.py", "--output_dir", str(tmp_path / "p"), "--preset", "nope")
    assert done.returncode == 2 and "no preset 'nope' (configs/presets/nope.yaml)" in done.stderr
