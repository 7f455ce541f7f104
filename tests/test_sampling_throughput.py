"""Issue 18: the solvers (DPM-Solver++, PNDM), interval guidance, and generation sharded over ranks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, run_script
from shared.io import InputError, read_csv
from shared.sampling.guidance import GuidedSampler, network_evaluations, sample_with_guidance
from shared.sampling.schedulers import SAMPLERS, DPMSolverScheduler, make_scheduler, sampler_name
from shared.sampling.sharding import SampleLedger

SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0205)
MASK = ROOT / "bundles" / "ventricle_mask_ldm"
SPADE = ROOT / "bundles" / "spade_mri_ldm"


class ToyEps(torch.nn.Module):
    """A smooth, timestep- and context-dependent noise prediction (a stand-in for a trained UNet)."""

    def forward(self, x, timesteps, context=None):
        t = torch.as_tensor(timesteps, dtype=torch.float32).reshape(-1, *([1] * (x.dim() - 1))) / 1000.0
        shift = 0.0 if context is None else context.reshape(context.shape[0], -1).sum(1).reshape(-1, 1, 1, 1, 1)
        return 0.3 * torch.tanh(x) * (1.0 + t) + 0.1 * shift * t


def test_every_sampler_is_built_with_the_training_betas():
    training = make_scheduler("ddpm", **SCHEDULE)
    for name in SAMPLERS:
        scheduler = make_scheduler(name, **SCHEDULE)
        assert sampler_name(scheduler) == name
        betas = scheduler.betas if name != "dpm_solver" else scheduler.solver.betas
        torch.testing.assert_close(torch.as_tensor(betas, dtype=torch.float32), training.betas.float())
    with pytest.raises(InputError, match="sampler: expected one of ddpm, ddim, pndm, dpm_solver, got 'heun'"):
        make_scheduler("heun", **SCHEDULE)


def test_dpm_solver_adapter_equals_diffusers_own_loop_on_a_toy_model():
    from diffusers import DPMSolverMultistepScheduler

    noise = torch.randn(2, 3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    context = torch.rand(2, 1, 2, generator=torch.Generator().manual_seed(1))
    model = ToyEps()
    adapter = make_scheduler("dpm_solver", **SCHEDULE)
    assert isinstance(adapter, DPMSolverScheduler)
    ours = sample_with_guidance(model, adapter, noise, context, None, 1.0, 12, progress=False)

    theirs_scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=make_scheduler("ddpm", **SCHEDULE).betas.numpy(),
        solver_order=2, algorithm_type="dpmsolver++", prediction_type="epsilon",
    )  # fmt: skip
    theirs_scheduler.set_timesteps(12)
    x = noise
    for t in theirs_scheduler.timesteps:
        x = theirs_scheduler.step(model(x, t.repeat(2), context), t, x).prev_sample
    torch.testing.assert_close(ours, x)
    assert len(adapter.timesteps) == 12  # one network evaluation per step


def trained_mask_network():
    """The mask bundle's starter diffusion UNet (science preset), weights loaded."""
    from monai.bundle import ConfigParser

    from shared.checkpoints import load_weights

    parser = ConfigParser()
    parser.read_config([str(MASK / "configs/inference.yaml"), str(MASK / "configs/presets/science.yaml")])
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(load_weights(MASK / "starter" / "model.pt", "cpu"))
    return network.eval()


@pytest.mark.slow
def test_dpm_solver_at_many_steps_converges_to_ddim_250_on_a_trained_network():
    from shared.engines.diffusion import make_context, null_context

    network = trained_mask_network()
    noise = torch.randn(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    c = torch.tensor([0.2, 0.8])
    context, null = make_context(c, torch.ones_like(c, dtype=torch.bool)), null_context(2)

    def sample(name: str, steps: int) -> torch.Tensor:
        return GuidedSampler(make_scheduler(name, **SCHEDULE), steps, guidance_scale=4.0)(noise, network, context, null)

    reference = sample("ddim", 250)
    errors = {n: float((sample("dpm_solver", n) - reference).norm() / reference.norm()) for n in (5, 25, 100)}
    assert errors[5] > errors[25] > errors[100], errors
    assert errors[100] < 0.03, errors  # measured 0.014 (5 steps: 0.149)


def test_interval_guidance_equals_full_guidance_over_the_whole_trajectory():
    from monai.inferers import DiffusionInferer

    noise = torch.randn(2, 3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    context = torch.rand(2, 1, 2, generator=torch.Generator().manual_seed(1))
    null = torch.zeros_like(context)
    model = ToyEps()
    for name in ("ddim", "dpm_solver", "pndm"):
        scheduler = make_scheduler(name, **SCHEDULE)
        full = GuidedSampler(scheduler, 10, 4.0)(noise, model, context, null)  # MONAI's cfg path
        whole = GuidedSampler(scheduler, 10, 4.0, guidance_interval=[0, 999])(noise, model, context, null)
        torch.testing.assert_close(whole, full)
        scheduler.set_timesteps(10)
        monai = DiffusionInferer(scheduler).sample(noise, model, scheduler, conditioning=context, cfg=4.0,
                                                   cfg_fill_value=0.0, verbose=False)  # fmt: skip
        torch.testing.assert_close(full, monai)
        # no guided step at all: plain conditional sampling (G = 1)
        nowhere = GuidedSampler(scheduler, 10, 4.0, guidance_interval=[1000, 1000])(noise, model, context, null)
        torch.testing.assert_close(nowhere, GuidedSampler(scheduler, 10, 1.0)(noise, model, context, None))
        partly = GuidedSampler(scheduler, 10, 4.0, guidance_interval=[300, 999])(noise, model, context, null)
        assert not torch.allclose(partly, full) and not torch.allclose(partly, nowhere)
    assert network_evaluations(make_scheduler("ddim", **SCHEDULE), 10, [300, 999]) == (7, 3)  # 900..300 guided
    for bad in ([5], [10, 2], [-1, 5], "0,999", [0.5, 900]):
        with pytest.raises(InputError, match="guidance_interval"):
            GuidedSampler(make_scheduler("ddim", **SCHEDULE), 10, 4.0, guidance_interval=bad)


def test_ledger_counts_a_sample_only_with_its_settings_request_and_files(tmp_path):
    ledger = SampleLedger(tmp_path, {"sampler": "ddim", "steps": 4})
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    ledger.mark("a", {"file": "a.nii.gz", "v": np.float64(0.5)}, ["a.nii.gz"], request=[np.float32(0.25)])
    assert ledger.finished("a", [0.25]) == {"file": "a.nii.gz", "v": 0.5}
    assert ledger.finished("a", [0.3]) is None  # another request
    assert SampleLedger(tmp_path, {"sampler": "ddim", "steps": 5}).finished("a", [0.25]) is None  # other settings
    (tmp_path / "a.nii.gz").unlink()
    assert ledger.finished("a", [0.25]) is None  # its file is gone
    with pytest.raises(InputError, match="1 samples not finished"):
        ledger.rows(["a"], [[0.25]])


def scratch_bundle(source: Path, target: Path) -> Path:
    """A bundle folder with the configs and the starter weights as ``models/``."""
    shutil.copytree(source / "configs", target / "configs")
    shutil.copytree(source / "starter", target / "models")
    return target


def mask_overrides(output: Path) -> list[str]:
    """A small mask generation with the starter weights: 5 samples in batches of 2 (the last batch uneven)."""
    return ["--ckpt_dir", "models", "--output_dir", str(output), "--num_samples", "5", "--batch_size", "2",
            "--num_inference_steps", "2"]  # fmt: skip


@pytest.mark.slow
def test_one_and_two_gloo_ranks_write_byte_identical_files(tmp_path, monkeypatch):
    # float reductions depend on the thread count; torchrun gives each rank one thread, so the
    # single process gets one too (same threads per process, same bytes)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    mask = scratch_bundle(MASK, tmp_path / "mask")
    spade = scratch_bundle(SPADE, tmp_path / "spade")
    outputs = {}
    for ranks in (1, 2):  # scripts/generate_pairs.py: both bundles, under torchrun with their overlays for 2
        outputs[ranks] = tmp_path / f"pairs_{ranks}"
        done = run_script(
            "generate_pairs.py", "--output_dir", str(outputs[ranks]), "--num_samples", "5", "--preset", "science",
            "--mask_steps", "2", "--image_steps", "2", "--mask_bundle", str(mask), "--spade_bundle", str(spade),
            "--mask_overrides", "{'ckpt_dir': 'models', 'batch_size': 2}",
            "--spade_overrides", "{'ckpt_dir': 'models', 'diffusion_spade_hidden': 16}",
            "--nproc_per_node", str(ranks),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = outputs[1], outputs[2]
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file() and ".samples" not in p.parts)
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file() and ".samples" not in p.parts)
    assert len([f for f in files if f.name.endswith(".nii.gz")]) == 15  # 5 label maps, 5 images, 5 labels
    for name in files:
        if name == Path("manifest.csv"):  # the pair manifest names each source map by its path (pairs_1, pairs_2)
            rows = [{k: v for k, v in r.items() if k != "source_label"} for r in read_csv(one / name)]
            assert rows == [{k: v for k, v in r.items() if k != "source_label"} for r in read_csv(two / name)]
            continue
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    refused = run_script("generate_pairs.py", "--output_dir", str(tmp_path / "x"), "--nproc_per_node", "0")
    assert refused.returncode == 2 and "error: --nproc_per_node: 0 is out of range, expected >= 1" in refused.stderr
    refused = run_script("generate_pairs.py", "--output_dir", str(tmp_path / "x"), "--image_sampler", "euler")
    assert refused.returncode == 2 and "--image_sampler: expected one of ddpm, ddim, pndm, dpm_solver" in refused.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_generation_killed_mid_way_resumes_with_no_duplicate_and_no_gap(tmp_path):
    mask = scratch_bundle(MASK, tmp_path / "mask")
    out = tmp_path / "maps"
    config = "['configs/inference.yaml','configs/presets/science.yaml']"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--ckpt_dir", "models",
               "--output_dir", str(out), "--num_samples", "4", "--batch_size", "1",
               "--num_inference_steps", "25"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=mask, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / ".samples").glob("*.json"))) < 1 and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    kept = {p.name: p.stat().st_mtime_ns for p in (out / ".samples").glob("*.json")}
    assert 1 <= len(kept) < 4 and not (out / "manifest.csv").exists()
    done = subprocess.run(command, cwd=mask, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_csv(out / "manifest.csv")
    assert [r["file"] for r in rows] == [f"mask_{i:04d}.nii.gz" for i in range(4)]  # no duplicate, no gap
    assert sorted(p.name for p in out.glob("mask_*.nii.gz")) == [r["file"] for r in rows]
    assert {p.name: p.stat().st_mtime_ns for p in (out / ".samples").glob("*.json") if p.name in kept} == kept
    records = [json.loads(p.read_text()) for p in sorted((out / ".samples").glob("*.json"))]
    assert [r["row"]["seed"] for r in records] == list(range(4))


def test_study_grid_scores_and_the_noise_rule():
    from shared.benchmarks.solver_quality import Setting, bootstrap_se, holds, settings_of, summarise

    grid = settings_of("slice_based_ldm_brats")
    assert grid[-1] == Setting("ddim", 250) and Setting("ddim", 50, 1.0) in grid and len(grid) == 3 * 5 + 3
    mask_grid = settings_of("ventricle_mask_ldm")
    assert Setting("dpm_solver", 5, guidance_interval=(500, 999)) in mask_grid
    assert Setting("ddim", 25) in mask_grid and mask_grid.count(Setting("ddim", 25)) == 1  # the paper's is in the grid
    rng = np.random.default_rng(0)
    c = np.linspace(0, 1, 24)
    reference = {"c": c, "ventricle_ml": 10 + 40 * c + rng.normal(0, 2, 24), "c_error": np.abs(rng.normal(0, 0.1, 24))}
    figures, se = summarise("ventricle_mask_ldm", reference), bootstrap_se("ventricle_mask_ldm", reference)
    assert figures["rho_c_volume"] > 0.9 and 0 < se["mean_abs_c_error"] < 0.05
    assert holds("ventricle_mask_ldm", figures, figures, se)
    worse = summarise("ventricle_mask_ldm", {**reference, "c_error": reference["c_error"] + 0.2})
    assert not holds("ventricle_mask_ldm", worse, figures, se)
    better = summarise("ventricle_mask_ldm", {**reference, "c_error": reference["c_error"] * 0.0})
    assert not holds("ventricle_mask_ldm", better, figures, se)  # two-sided: a change either way is a change


def test_recipes_are_composed_from_measured_costs():
    from shared.benchmarks.solver_speed import Recipe, cost_rows, recipe_rows

    costs = {"bundle": "ventricle_mask_ldm", "guided_eval_s": 36.0, "guided_eval_gflop": 4205.0, "eval_s": 18.0,
             "eval_gflop": 2102.5, "decode_s": 31.6, "decode_gflop": 3000.0}  # fmt: skip
    recipes = [Recipe("paper", "ddim", 25), Recipe("dpm 5", "dpm_solver", 5), Recipe("dpm 5 interval", "dpm_solver", 5,
               (500, 999)), Recipe("pndm 10", "pndm", 10)]  # fmt: skip
    rows = recipe_rows(costs, recipes)
    assert [(r["guided_evals"], r["single_evals"]) for r in rows] == [(25, 0), (5, 0), (3, 2), (10, 0)]
    assert rows[0]["seconds_per_volume"] == pytest.approx(25 * 36.0 + 31.6)
    assert rows[2]["seconds_per_volume"] == pytest.approx(3 * 36.0 + 2 * 18.0 + 31.6)
    assert rows[1]["speedup"] == pytest.approx(rows[0]["seconds_per_volume"] / (5 * 36.0 + 31.6))
    by_operation = {r["operation"]: r for r in cost_rows(costs)}
    assert by_operation["denoising step, guided (batch 2)"]["gflop_per_second"] == pytest.approx(4205.0 / 36.0)
    assert by_operation["decode, whole volume"]["fraction_of_cpu_peak"] == pytest.approx(3000.0 / 31.6 / 157.0)
