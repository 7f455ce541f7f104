"""The noise schedulers of every bundle's sampler, built from the training schedule's parameters."""

from __future__ import annotations

from typing import Any

from shared.io import InputError

#: Samplers the bundles can run.
SAMPLERS = ("ddpm", "ddim")


def make_scheduler(sampler: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> Any:
    """MONAI ``DDPMScheduler`` or ``DDIMScheduler`` with the training noise schedule (scaled linear)."""
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    if sampler not in SAMPLERS:
        raise InputError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    schedule = dict(num_train_timesteps=num_train_timesteps, schedule="scaled_linear_beta", beta_start=beta_start)
    if sampler == "ddim":
        return DDIMScheduler(**schedule, beta_end=beta_end, prediction_type="epsilon", clip_sample=False)
    return DDPMScheduler(**schedule, beta_end=beta_end, prediction_type="epsilon", clip_sample=False)
