"""Seconds per volume of each bundle's paper sampler against fewer-step recipes, same networks (issue 18).

A volume costs its network evaluations plus one decode. :func:`measure_costs` times, at one size
and on one device, what each costs for a bundle's networks (random weights: timing only):

- one denoising evaluation: a single pass, and for the mask LDM also the guided doubled batch;
- one decode of the whole volume, in eager fp32 and, where a recipe asks for it, compiled
  (``torch.compile``; warmed up first, since the first call pays for the compilation);

with their FLOPs (``torch.utils.flop_counter``, counted during a timed call: the counter's
per-operator overhead is microseconds against seconds of convolution) and the achieved FLOP/s.
:func:`recipe_rows` then composes every recipe's seconds per volume from those measured costs
(guided evaluations x guided cost + single evaluations x single cost + decode) and its ratio to
the paper's sampler; the recipes are the ones the quality study found within the reference's
noise (:mod:`shared.benchmarks.solver_quality`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from shared.benchmarks.networks import _synchronise, build_sampler
from shared.fast_path import FastPath

#: the developers' guide's fp32 peak of this machine (2 Zen 3 cores, AVX2 FMA at 2.45 GHz: 2 x 2.45 x 32);
#: a fraction above 1 means the cores ran faster than that (boost clock)
CPU_FP32_PEAK_GFLOPS = 157.0


@dataclass(frozen=True)
class Recipe:
    """A sampler setting: solver, steps, guidance interval (mask LDM) and whether the decoder is compiled."""

    label: str
    sampler: str
    steps: int
    guidance_interval: tuple[int, int] | None = None
    compiled_decode: bool = False


#: the papers' samplers first, then fewer-step recipes (README, "Fewer sampling steps", says which hold)
RECIPES: dict[str, list[Recipe]] = {
    "ventricle_mask_ldm": [
        Recipe("paper: DDIM 25, guided every step", "ddim", 25),
        Recipe("DPM-Solver++ 5, guided every step", "dpm_solver", 5),
        Recipe("DPM-Solver++ 5, guided for t >= 500", "dpm_solver", 5, (500, 999)),
    ],
    "spade_mri_ldm": [
        Recipe("paper: DDIM 50", "ddim", 50),
        Recipe("DPM-Solver++ 15", "dpm_solver", 15),
        Recipe("DPM-Solver++ 10", "dpm_solver", 10),
    ],
    "slice_based_ldm_brats": [
        Recipe("paper: DDIM 50 (eta 1)", "ddim", 50),
        Recipe("DPM-Solver++ 10", "dpm_solver", 10),
        Recipe("DDIM 10 (eta 0)", "ddim", 10),
        Recipe("DDIM 5 (eta 0)", "ddim", 5),
        Recipe("DDIM 10 (eta 0), compiled decoder", "ddim", 10, compiled_decode=True),
    ],
}


def _timed(call: Callable[[], Any], device: str, runs: int, warmup: int, count: bool) -> tuple[float, int]:
    """Median seconds of ``call`` over ``runs`` (after ``warmup``) and the FLOPs of one call (0 unless ``count``)."""
    from torch.utils.flop_counter import FlopCounterMode

    for _ in range(warmup):
        with torch.inference_mode():  # as the timed calls: a compiled function is not compiled again
            call()
    seconds, flops = [], 0
    for index in range(runs):
        counter = FlopCounterMode(display=False) if count and index == 0 else None
        with torch.inference_mode():
            if counter is not None:
                counter.__enter__()
            _synchronise(device)
            began = time.perf_counter()
            call()
            _synchronise(device)
            seconds.append(time.perf_counter() - began)
            if counter is not None:
                counter.__exit__(None, None, None)
                flops = int(counter.get_total_flops())
    return statistics.median(seconds), flops


def measure_costs(bundle: str, size: str = "paper", device: str = "cpu", runs: int = 1, warmup: int = 1) -> dict:
    """The costs of one bundle's network evaluations and decode (see the module docstring), in seconds and FLOPs."""

    sampler = build_sampler(bundle, size, device, FastPath())
    noise = torch.randn(1, *sampler.latent_shape, generator=torch.Generator().manual_seed(0)).to(device)
    costs: dict[str, Any] = {"bundle": bundle, "size": size, "shape": "x".join(str(s) for s in sampler.shape)}
    costs["parameters_m"] = sum(p.numel() for n in sampler.networks.values() for p in n.parameters()) / 1e6
    # one step of the paper's loop: the guided doubled batch for the mask LDM, a single pass otherwise
    first, first_flops = _timed(lambda: sampler.denoise(noise, 1), device, runs, warmup, True)
    if bundle == "ventricle_mask_ldm":
        costs["guided_eval_s"], costs["guided_eval_gflop"] = first, first_flops / 1e9
        single = sampler.single_pass
        costs["eval_s"], flops = _timed(lambda: single(noise), device, runs, warmup, True)
        costs["eval_gflop"] = flops / 1e9
    else:
        costs["eval_s"], costs["eval_gflop"] = first, first_flops / 1e9
    latent = sampler.denoise(noise, 1)
    costs["decode_s"], flops = _timed(lambda: sampler.decode(latent), device, runs, 0, True)
    costs["decode_gflop"] = flops / 1e9
    if any(r.compiled_decode for r in RECIPES[bundle]):
        decode = torch.compile(sampler.decode)  # the first (warm-up) call compiles
        costs["compiled_decode_s"], _ = _timed(lambda: decode(latent), device, runs, 1, False)
    return costs


def recipe_rows(costs: dict, recipes: list[Recipe] | None = None) -> list[dict]:
    """Seconds per volume of each recipe, composed from ``costs``, with its ratio to the first (the paper's)."""
    from shared.sampling.guidance import network_evaluations
    from shared.sampling.schedulers import make_scheduler

    bundle = costs["bundle"]
    rows = []
    for recipe in recipes or RECIPES[bundle]:
        scheduler = make_scheduler(recipe.sampler, 1000, 0.0015, 0.0205)
        evaluations = network_evaluations(scheduler, recipe.steps, recipe.guidance_interval)
        # only the mask LDM samples with guidance (a doubled batch); the others make one pass per step
        guided, single = evaluations if bundle == "ventricle_mask_ldm" else (0, sum(evaluations))
        decode = costs["compiled_decode_s"] if recipe.compiled_decode else costs["decode_s"]
        sampling = guided * costs.get("guided_eval_s", 0.0) + single * costs["eval_s"]
        rows.append(
            {
                "bundle": bundle,
                "recipe": recipe.label,
                "guided_evals": guided,
                "single_evals": single,
                "sampling_s": sampling,
                "decode_s": decode,
                "seconds_per_volume": sampling + decode,
            }
        )
    for row in rows:
        row["speedup"] = rows[0]["seconds_per_volume"] / row["seconds_per_volume"]
    return rows


def cost_rows(costs: dict) -> list[dict]:
    """One row per measured operation: seconds, GFLOP, GFLOP/s and the fraction of the CPU's fp32 peak."""
    rows = []
    names = [("guided_eval", "denoising step, guided (batch 2)"), ("eval", "denoising step, single pass"),
             ("decode", "decode, whole volume")]  # fmt: skip
    for key, label in names:
        if f"{key}_s" not in costs:
            continue
        gflops = costs[f"{key}_gflop"] / costs[f"{key}_s"] if costs[f"{key}_gflop"] else float("nan")
        rows.append(
            {
                "bundle": costs["bundle"],
                "operation": label,
                "seconds": costs[f"{key}_s"],
                "gflop": costs[f"{key}_gflop"],
                "gflop_per_second": gflops,
                "fraction_of_cpu_peak": gflops / CPU_FP32_PEAK_GFLOPS,
            }
        )
    if "compiled_decode_s" in costs:
        gflops = costs["decode_gflop"] / costs["compiled_decode_s"]
        rows.append({"bundle": costs["bundle"], "operation": "decode, whole volume, torch.compile",
                     "seconds": costs["compiled_decode_s"], "gflop": costs["decode_gflop"], "gflop_per_second": gflops,
                     "fraction_of_cpu_peak": gflops / CPU_FP32_PEAK_GFLOPS})  # fmt: skip
    return rows
