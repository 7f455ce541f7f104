"""Starter weights: written from a models folder, checked by sha256 before use, the shipped ones intact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_script
from shared.export.starter_weights import install_starter_weights, verify_starter_weights, write_starter_weights
from shared.io import InputError, sha256_of
from shared.workflow.report import DEMO_THRESHOLDS, check_demo_figures

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ("ventricle_mask_ldm", "spade_mri_ldm", "slice_based_ldm_brats")


@pytest.fixture
def models(tmp_path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    net = torch.nn.Conv3d(1, 2, 3)
    torch.save({"model": net.state_dict(), "optimizer": {"lr": 1.0}}, folder / "model.pt")
    (folder / "grid.json").write_text('{"shape": [8, 8, 8]}')
    return folder


def test_written_starter_keeps_weights_only_and_installs_after_verification(models, tmp_path):
    manifest = write_starter_weights(models, tmp_path / "starter", "b", ["model.pt", "grid.json"], "demo",
                                     {"diffusion_epochs": 3}, {"data": "cmd"})  # fmt: skip
    assert manifest["preset"] == "demo" and manifest["overrides"] == {"diffusion_epochs": 3}
    assert manifest["files"]["model.pt"]["sha256"] == sha256_of(tmp_path / "starter" / "model.pt")
    state = torch.load(tmp_path / "starter" / "model.pt", weights_only=True)
    assert set(state) == {"weight", "bias"} and state["weight"].dtype == torch.float16  # no optimiser state
    net = torch.nn.Conv3d(1, 2, 3)
    net.load_state_dict(state)  # fp16 on disk, cast back to the network's fp32
    assert net.weight.dtype == torch.float32
    original = torch.load(models / "model.pt", weights_only=True)["model"]["weight"]
    torch.testing.assert_close(net.weight, original, atol=1e-3, rtol=1e-3)
    install_starter_weights(tmp_path / "starter", tmp_path / "installed")
    assert (tmp_path / "installed" / "model.pt").read_bytes() == (tmp_path / "starter" / "model.pt").read_bytes()
    assert json.loads((tmp_path / "installed" / "starter_manifest.json").read_text())["bundle"] == "b"


def test_tampered_or_missing_file_is_refused_and_nothing_is_installed(models, tmp_path):
    write_starter_weights(models, tmp_path / "starter", "b", ["model.pt", "grid.json"], "demo")
    (tmp_path / "starter" / "grid.json").write_text('{"shape": [9, 9, 9]}')
    with pytest.raises(InputError, match=r"grid.json: sha256 .* does not match"):
        install_starter_weights(tmp_path / "starter", tmp_path / "installed")
    assert not (tmp_path / "installed").exists()
    (tmp_path / "starter" / "model.pt").unlink()
    with pytest.raises(InputError, match="model.pt: listed in manifest.json but missing"):
        verify_starter_weights(tmp_path / "starter")
    with pytest.raises(InputError, match="missing; train the bundle first"):
        write_starter_weights(models, tmp_path / "other", "b", ["model_autoencoder.pt"], "demo")


def test_oversized_weights_are_refused(models, tmp_path, monkeypatch):
    monkeypatch.setattr("shared.export.starter_weights.MAX_FILE_BYTES", 100)
    with pytest.raises(InputError, match="over the 10 MB starter limit"):
        write_starter_weights(models, tmp_path / "starter", "b", ["model.pt"], "demo")
    assert not (tmp_path / "starter").exists() and not list(tmp_path.glob(".starter*"))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_shipped_starter_weights_match_their_manifest(bundle):
    folder = ROOT / "bundles" / bundle / "starter"
    manifest = verify_starter_weights(folder)
    assert manifest["bundle"] == bundle
    assert (ROOT / "bundles" / bundle / "configs" / "presets" / f"{manifest['preset']}.yaml").is_file()
    assert all(entry["bytes"] < 10 * 2**20 for entry in manifest["files"].values())
    assert manifest["provenance"]["training_commands"] and manifest["provenance"]["commit"]


def test_make_starter_weights_refuses_unknown_bundle_and_preset(tmp_path):
    done = run_script("make_starter_weights.py", "lungs", "--models_dir", str(tmp_path), "--preset", "demo")
    assert done.returncode == 2 and "error: bundle: unknown 'lungs'" in done.stderr
    done = run_script("make_starter_weights.py", "spade_mri_ldm", "--models_dir", str(tmp_path), "--preset", "huge")
    assert done.returncode == 2 and "presets/huge.yaml does not exist" in done.stderr


def _figures(real_dice=0.9, rho=0.8, non_empty=1.0):
    return {
        "ventricles": {"segmentation": {"real": {"dice": real_dice}},
                       "generator": {"raw": {"icv_ratio_median": 1.0, "rho_c_volume": rho}}},
        "tumours": {"segmentation": {"real": {"dice": 0.7}},
                    "generator": {"raw": {"non_empty_fraction": non_empty, "rho_volume": 0.7}}},
    }  # fmt: skip


def test_demo_figures_are_checked_against_every_threshold(tmp_path):
    assert check_demo_figures(_figures()) == {}
    failures = check_demo_figures(_figures(real_dice=0.5, rho=0.2, non_empty=0.5))
    assert list(failures) == ["ventricles_real_dice", "ventricles_rho", "tumours_non_empty"]
    assert "Dice 0.500 < 0.8" in failures["ventricles_real_dice"]
    assert list(check_demo_figures({}).values()) == [
        "ventricles: no figures (study not run)", "tumours: no figures (study not run)",
    ]  # fmt: skip
    assert DEMO_THRESHOLDS["tumours_real_dice"] == 0.6
    (tmp_path / "figures.json").write_text(json.dumps(_figures(non_empty=0.5)))
    failed = run_script("check_demo_report.py", str(tmp_path))
    assert failed.returncode == 1 and "below threshold: tumours: non-empty masks 0.50 < 0.9" in failed.stderr
    warned = run_script("check_demo_report.py", str(tmp_path), "--warn_only", "tumours_non_empty")
    assert warned.returncode == 0 and "warning, known shortfall: tumours: non-empty" in warned.stderr
    typo = run_script("check_demo_report.py", str(tmp_path), "--warn_only", "tumour_rho")
    assert typo.returncode == 2 and "unknown threshold 'tumour_rho'" in typo.stderr


def test_recipe_continuations_are_kept_and_written_as_resumed_training_commands(models, tmp_path):
    import importlib.util

    manifest = write_starter_weights(models, tmp_path / "starter", "b", ["model.pt"], "demo", {"diffusion_epochs": 3},
                                     continuations=[{"diffusion_epochs": 5, "tumour_loss_weight": 1}])  # fmt: skip
    assert manifest["continuations"] == [{"diffusion_epochs": 5, "tumour_loss_weight": 1}]
    spec = importlib.util.spec_from_file_location("make_starter_weights", ROOT / "scripts" / "make_starter_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    commands = module.training_commands("demo", {"diffusion_epochs": 3}, "d.json", [{"diffusion_epochs": 5}])
    assert len(commands) == 3 and "train_diffusion.yaml" not in commands[0]
    assert commands[1].endswith("--datalist d.json --diffusion_epochs 3")
    assert commands[2].endswith("--datalist d.json --diffusion_epochs 5")
    done = run_script("make_starter_weights.py", "spade_mri_ldm", "--models_dir", str(tmp_path), "--preset", "demo",
                      "--continuations", "5")  # fmt: skip
    assert done.returncode == 2 and "error: --continuations: '5' is not a list of dict" in done.stderr
