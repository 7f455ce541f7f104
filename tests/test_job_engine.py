"""Bundle jobs built from named arguments: refused at parse time when they do not fit; the sampling Inferer."""

from __future__ import annotations

import functools

import pytest
import torch

from shared.engines.job import JobEngine, check_call
from shared.io import InputError
from shared.sampling.guidance import GuidedSampler, sample_with_guidance


def _generate(model: str, steps: int, seed: int = 0) -> str:
    return f"{model}-{steps}-{seed}.csv"


def _summary(manifest: str, scale: float = 1.0) -> dict[str, float]:
    return {"length": scale * len(manifest)}


def test_a_job_whose_named_arguments_do_not_fit_is_refused_with_the_functions_name():
    with pytest.raises(InputError, match=r"job .*_generate: got an unexpected keyword argument 'step'"):
        JobEngine(job=functools.partial(_generate, model="m", steps=2, step=2))
    with pytest.raises(InputError, match=r"job .*_generate: missing a required argument: 'steps'"):
        check_call(functools.partial(_generate, model="m"))
    with pytest.raises(InputError, match=r"summary .*_summary: got an unexpected keyword argument 'scales'"):
        JobEngine(job=functools.partial(_generate, model="m", steps=2), summary=functools.partial(_summary, scales=2))
    with pytest.raises(InputError, match="job: expected a callable, got int"):
        check_call(3)


def test_the_job_runs_once_and_its_summary_becomes_the_engines_metrics():
    engine = JobEngine(
        job=functools.partial(_generate, model="m", steps=2), summary=functools.partial(_summary, scale=2)
    )
    state = engine.run()
    assert state.iteration == 1 and state.metrics == {"length": 2.0 * len("m-2-0.csv")}


def test_guided_sampler_is_the_guided_loop_and_passes_network_arguments_on():
    from monai.networks.schedulers import DDIMScheduler

    torch.manual_seed(0)
    weight = torch.randn(2, 2)

    def model(x, timesteps, context=None, seg=None):
        out = torch.einsum("ij,bj...->bi...", weight, x) * 0.1
        if context is not None:
            out = out + context.mean()
        return out + (0 if seg is None else seg)

    noise, context, null = torch.randn(1, 2, 4, 4), torch.ones(1, 1, 2), torch.zeros(1, 1, 2)
    sampler = GuidedSampler(DDIMScheduler(num_train_timesteps=100), num_inference_steps=5, guidance_scale=3.0)
    expected = sample_with_guidance(model, DDIMScheduler(num_train_timesteps=100), noise, context, null, 3.0, 5, False)
    torch.testing.assert_close(sampler(noise, model, context, null), expected)
    seg = torch.full((1, 2, 4, 4), 0.5)
    plain = sample_with_guidance(functools.partial(model, seg=seg), sampler.scheduler, noise, None, None, 1.0, 5, False)
    torch.testing.assert_close(sampler.with_guidance(1.0)(noise, model, seg=seg), plain)
    with pytest.raises(InputError, match="guidance_scale: must be >= 0"):
        GuidedSampler(sampler.scheduler, 5, -1.0)
