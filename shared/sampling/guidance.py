"""Latent sampling loops, with classifier-free guidance (SPEC section 2) or plainly conditional.

At every step the conditional and unconditional predictions come from **one doubled
batch** and are combined as ``eps = eps_u + G * (eps_c - eps_u)``: ``G = 0`` is
unconditional, ``G = 1`` plain conditional, ``G > 1`` pushes samples towards the condition
(the paper uses ``G = 4``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from monai.inferers import Inferer
from tqdm.auto import tqdm

from shared.io import InputError

#: ``model(x, timesteps=t, context=context) -> eps`` (a MONAI ``DiffusionModelUNet``).
EpsModel = Callable[..., torch.Tensor]


def check_steps(num_inference_steps: int) -> None:
    """Refuse anything but an integer number of sampling steps >= 1."""
    if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool) or num_inference_steps < 1:
        raise InputError(f"num_inference_steps: expected an integer >= 1, got {num_inference_steps!r}")


def check_guidance_settings(guidance_scale: float, num_inference_steps: int) -> None:
    """Refuse ``G < 0`` and fewer than one step, with one clear message each."""
    if not isinstance(guidance_scale, (int, float)) or isinstance(guidance_scale, bool):
        raise InputError(f"guidance_scale: expected a number, got {guidance_scale!r}")
    if guidance_scale < 0:
        raise InputError(f"guidance_scale: must be >= 0, got {guidance_scale}")
    check_steps(num_inference_steps)


def guided_eps(
    model: EpsModel, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, null: torch.Tensor, guidance_scale: float
) -> torch.Tensor:
    """Guided noise prediction for ``x`` ``(B, ...)`` at timestep ``t`` from one doubled batch.

    Args:
        model: the diffusion network.
        x: current samples ``(B, C, *spatial)``.
        t: scalar timestep.
        context: conditional contexts ``(B, 1, D)``.
        null: unconditional contexts ``(B, 1, D)``.
        guidance_scale: ``G``.
    """
    batch = x.shape[0]
    timesteps = torch.full((2 * batch,), int(t), device=x.device, dtype=torch.long)
    eps = model(torch.cat([x, x]), timesteps=timesteps, context=torch.cat([null, context]))
    eps_u, eps_c = eps[:batch], eps[batch:]
    return eps_u + guidance_scale * (eps_c - eps_u)


@torch.no_grad()
def sample_with_guidance(
    model: EpsModel,
    scheduler: object,
    noise: torch.Tensor,
    context: torch.Tensor,
    null: torch.Tensor | None,
    guidance_scale: float,
    num_inference_steps: int,
    progress: bool = True,
    step_kwargs: dict | None = None,
) -> torch.Tensor:
    """Run a MONAI scheduler (DDPM or DDIM) from ``noise``, with classifier-free guidance if ``null`` is given.

    Args:
        model: ``model(x, timesteps=..., context=...)``.
        scheduler: ``monai.networks.schedulers`` DDPM/DDIM scheduler (its ``set_timesteps`` is called).
        noise: initial latents ``(B, C, *spatial)``.
        context: ``(B, 1, D)`` conditional contexts (or whatever the model takes as ``context``).
        null: ``(B, 1, D)`` null contexts; ``None`` for plain conditional sampling (one pass per step).
        guidance_scale: ``G >= 0`` (unused without ``null``).
        num_inference_steps: number of denoising steps.
        progress: show a progress bar.
        step_kwargs: extra arguments of ``scheduler.step`` (DDIM ``eta``, a ``generator``).

    Returns:
        Denoised latents, same shape as ``noise``.
    """
    check_guidance_settings(guidance_scale, num_inference_steps)
    scheduler.set_timesteps(num_inference_steps=num_inference_steps, device=noise.device)
    x = noise
    for t in tqdm(scheduler.timesteps, desc="sampling", unit="step", disable=not progress):
        if null is None:
            timesteps = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
            eps = model(x, timesteps=timesteps, context=context)
        else:
            eps = guided_eps(model, x, t, context, null, guidance_scale)
        x, _ = scheduler.step(eps.float(), t, x, **(step_kwargs or {}))  # fp32 steps under autocast
    return x


class GuidedSampler(Inferer):
    """A MONAI ``Inferer`` for a bundle's sampling loop: noise -> denoised latents.

    It holds what a config sets about sampling (the scheduler, the number of steps, ``G``) and
    runs :func:`sample_with_guidance`; the bundles' inference configs expose it as ``inferer``.

    Args:
        scheduler: a MONAI DDPM/DDIM scheduler with the training noise schedule.
        num_inference_steps: denoising steps.
        guidance_scale: classifier-free guidance ``G >= 0`` (used when a null context is given).
        progress: show a progress bar over the steps.
    """

    def __init__(
        self, scheduler: object, num_inference_steps: int, guidance_scale: float = 1.0, progress: bool = False
    ):
        check_guidance_settings(guidance_scale, num_inference_steps)
        super().__init__()
        self.scheduler = scheduler
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = float(guidance_scale)
        self.progress = progress

    def with_guidance(self, guidance_scale: float) -> GuidedSampler:
        """The same sampler at another ``G`` (the scheduler is shared)."""
        return GuidedSampler(self.scheduler, self.num_inference_steps, guidance_scale, self.progress)

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: EpsModel,
        context: torch.Tensor | None = None,
        null: torch.Tensor | None = None,
        step_kwargs: dict | None = None,
        **network_kwargs: object,
    ) -> torch.Tensor:
        """Denoise ``inputs`` (noise ``(B, C, *spatial)``); ``network_kwargs`` go to every network call (``seg``)."""
        model = functools.partial(network, **network_kwargs) if network_kwargs else network
        return sample_with_guidance(
            model, self.scheduler, inputs, context, null, self.guidance_scale, self.num_inference_steps,
            self.progress, step_kwargs,
        )  # fmt: skip
