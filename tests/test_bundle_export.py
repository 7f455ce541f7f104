"""Bundles stand alone: run-time code never imports project code, and an exported zip runs without the project.

The export test is the model-zoo user's path: unzip one bundle in an empty folder and run its
inference with a Python that has the pip packages but not this project (a venv whose only
site-packages entry is the project venv's, without the editable install's import hook), and
compare every written volume with the in-repo run of the same seed, array for array.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import BARE_ENV, ROOT, run_script
from shared.demo.dataset import write_brain_dataset
from shared.export.bundle_export import bake_values, export_bundle, read_recipe
from shared.export.runtime_code import (
    PACKAGE_DIR,
    bundle_config_files,
    imported_modules,
    is_project_module,
    runtime_modules,
)
from shared.io import InputError, read_json

BUNDLES = ("ventricle_mask_ldm", "spade_mri_ldm", "slice_based_ldm_brats")
SCHEMA = ROOT.parent / "shared" / "model-zoo" / "meta_schema_20240725.json"


def test_run_time_modules_never_import_project_code():
    """Every run-time module (outside the project subpackages of ``PROJECT_SUBPACKAGES``) imports none of them."""
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts).removesuffix(".__init__")
        if is_project_module(module):
            continue
        offenders += [f"{module} imports {name}" for name in sorted(imported_modules(path)) if is_project_module(name)]
    assert offenders == []


@pytest.mark.parametrize("bundle", BUNDLES)
def test_what_a_bundle_runs_is_run_time_code_only(bundle):
    graph = runtime_modules(bundle_config_files(ROOT / "bundles" / bundle))
    assert "shared.io" in graph and not [m for m in graph if is_project_module(m)]
    others = {"ventricle_mask_ldm": "mask_", "spade_mri_ldm": "spade_", "slice_based_ldm_brats": "tumour_"}
    foreign = [m for m in graph if m.startswith("shared.sampling.") and not m.split(".")[-1].startswith(others[bundle])]
    shared_loops = {"shared.sampling.guidance", "shared.sampling.schedulers", "shared.sampling.sharding"}
    assert set(foreign) <= shared_loops  # no other bundle's sampler


def _run(python: str | Path, folder: Path, configs: list[str], *overrides: str) -> subprocess.CompletedProcess:
    config_list = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    command = [str(python), "-m", "monai.bundle", "run", "--config_file", config_list, *overrides]
    env = None if str(python) == sys.executable else BARE_ENV
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600, check=False, env=env)


def _volumes(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.asarray(nib.load(p).dataobj) for p in sorted(folder.rglob("*.nii.gz"))}


@pytest.fixture(scope="module")
def label_maps(tmp_path_factory) -> Path:
    """Two demo label maps on the science preset's grid (32^3), for the SPADE bundle to paint."""
    root = tmp_path_factory.mktemp("export_maps")
    write_brain_dataset(root, n_cases=2, shape=(32, 32, 32), validation_fraction=0.0)
    return root / "labels"


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_exported_zip_runs_without_the_project_and_writes_the_same_volumes(bundle, bare_python, label_maps, tmp_path):
    source = ROOT / "bundles" / bundle
    zip_path = tmp_path / f"{bundle}.zip"
    summary = export_bundle(source, source / "starter", zip_path)
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unpacked")
    exported = tmp_path / "unpacked" / bundle
    assert all(name.startswith(f"{bundle}/") for name in names)
    for part in ("configs/inference.yaml", "configs/metadata.json", "docs/README.md", "LICENSE", "models/model.pt",
                 "models/model_autoencoder.pt", "scripts/__init__.py", "scripts/io.py", "large_files.yml"):  # fmt: skip
        assert (exported / part).is_file(), part
    config_text = "".join(p.read_text() for p in (exported / "configs").rglob("*.yaml"))
    assert "import shared" not in config_text and "shared." not in config_text and "$import scripts" in config_text
    metadata = read_json(exported / "configs" / "metadata.json")
    assert {"nibabel", "pytorch-ignite", "scipy"} <= set(metadata["required_packages_version"])
    large = (exported / "large_files.yml").read_text()
    assert "models/model.pt" in large and 'hash_type: "sha256"' in large

    recipe = read_recipe(source / "starter")
    preset = f"configs/presets/{recipe['preset']}.yaml"
    flags = [item for key, value in recipe["values"].items() for item in (f"--{key}", repr(value))]
    common = ["--num_inference_steps", "2", "--seed", "3"]
    if bundle == "spade_mri_ldm":
        common += ["--label_maps", str(label_maps)]
    else:
        common += ["--num_samples", "2"]
    in_repo = _run(sys.executable, source, ["configs/inference.yaml", preset], *flags, *common, "--ckpt_dir",
                   str(source / "starter"), "--output_dir", str(tmp_path / "in_repo"))  # fmt: skip
    assert in_repo.returncode == 0, in_repo.stderr[-3000:]
    alone = _run(bare_python, exported, ["configs/inference.yaml"], *common, "--output_dir", str(tmp_path / "alone"))
    assert alone.returncode == 0, alone.stderr[-3000:]
    expected, produced = _volumes(tmp_path / "in_repo"), _volumes(tmp_path / "alone")
    assert len(expected) >= 2 and expected.keys() == produced.keys()
    for name, array in expected.items():
        np.testing.assert_array_equal(produced[name], array, err_msg=name)
        assert produced[name].dtype == array.dtype
    assert summary["preset"] == recipe["preset"]

    if bundle == "ventricle_mask_ldm":  # TorchScript: the label-map autoencoder traces (the diffusion UNets cannot)
        export = [str(bare_python), "-m", "monai.bundle", "ckpt_export", "autoencoder_def", "--filepath",
                  str(tmp_path / "autoencoder.ts"), "--ckpt_file", "models/model_autoencoder.pt", "--meta_file",
                  "configs/metadata.json", "--config_file", "configs/inference.yaml", "--use_trace", "True",
                  "--input_shape", "[1,33,32,32,32]"]  # fmt: skip
        done = subprocess.run(export, cwd=exported, capture_output=True, text=True, timeout=600, env=BARE_ENV)
        assert done.returncode == 0, done.stderr[-3000:]
        import torch

        traced = torch.jit.load(str(tmp_path / "autoencoder.ts"), map_location="cpu")
        assert traced(torch.zeros(1, 33, 32, 32, 32))[0].shape == (1, 33, 32, 32, 32)

    if SCHEMA.is_file():  # MONAI's own check, against the zoo schema beside this checkout (never downloaded)
        from monai.bundle import verify_metadata

        verify_metadata(meta_file=str(exported / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_export_refuses_bad_inputs_before_writing(tmp_path):
    source = ROOT / "bundles" / "ventricle_mask_ldm"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"--models .*empty: no folder with .pt weights"):
        export_bundle(source, empty, tmp_path / "out.zip")
    with pytest.raises(InputError, match=r"--output .*out.tar: expected a .zip path"):
        export_bundle(source, source / "starter", tmp_path / "out.tar")
    with pytest.raises(InputError, match=r"preset 'nope'"):
        export_bundle(source, source / "starter", tmp_path / "out.zip", preset="nope")
    with pytest.raises(InputError, match=r"recipe value no_such_key: no config of the bundle defines it"):
        export_bundle(source, source / "starter", tmp_path / "out.zip", overrides={"no_such_key": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing written, no staging left behind
    done = run_script("export_bundle.py", "no_bundle", "--models", str(empty), "--output", str(tmp_path / "x.zip"))
    assert done.returncode == 2 and "bundle: unknown 'no_bundle'" in done.stderr


def test_recipe_values_are_baked_into_the_keys_that_define_them(tmp_path):
    (tmp_path / "a.yaml").write_text("size: [1, 2]  # paper\nname: x\nblock:\n  inner: 1\n")
    (tmp_path / "b.yaml").write_text('size: "%a.yaml#size"\n')
    where = bake_values(tmp_path, {"size": [8, 8]}, "recipe")
    assert where == {"size": ["a.yaml", "b.yaml"]}
    assert (tmp_path / "a.yaml").read_text().startswith("size: [8, 8]  # recipe\nname: x\n")
    with pytest.raises(InputError, match="block spans several lines"):
        bake_values(tmp_path, {"block": 2}, "recipe")


#: Keys a stage config may define otherwise than the training configs.
OWN_KEYS = {"imports", "initialize", "run", "run_name", "latent_scaler", "dataset_dir"}


@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_configs_repeat_the_training_configs_network_values(bundle):
    """No cross-file references (they would resolve from the current folder); the repeated values agree."""
    from monai.bundle import ConfigParser

    configs = ROOT / "bundles" / bundle / "configs"
    stages = ("train_autoencoder", "train_diffusion")
    training = {name: ConfigParser.load_config_file(configs / f"{name}.yaml") for name in stages}
    for name in ("inference", "evaluate", "prepare"):
        path = configs / f"{name}.yaml"
        if not path.is_file():
            continue
        assert '"%configs/' not in path.read_text(), path
        values = ConfigParser.load_config_file(path)
        for stage, stage_values in training.items():
            for key in sorted((set(values) & set(stage_values)) - OWN_KEYS):
                assert values[key] == stage_values[key], f"{path.name}#{key} differs from {stage}.yaml"


def test_a_workflow_runs_from_another_folder_with_its_bundle_root(tmp_path, monkeypatch):
    """``create_workflow(..., bundle_root=...)`` from elsewhere: nothing resolves from the current folder."""
    from monai.bundle import create_workflow

    source = ROOT / "bundles" / "ventricle_mask_ldm"
    monkeypatch.chdir(tmp_path)
    workflow = create_workflow(
        config_file=[str(source / "configs" / "inference.yaml"), str(source / "configs" / "presets" / "science.yaml")],
        workflow_type="infer", bundle_root=str(source), ckpt_dir=str(source / "starter"), num_samples=1,
        num_inference_steps=1, output_dir=str(tmp_path / "out"), meta_file=str(source / "configs" / "metadata.json"),
        logging_file=str(source / "configs" / "logging.conf"),
    )  # fmt: skip
    assert workflow.check_properties() == []
    workflow.run()
    assert (tmp_path / "out" / "mask_0000.nii.gz").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
