"""Latent sampling loops, with classifier-free guidance (docs/method.md, section 2) or plainly conditional.

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


def check_guidance_interval(guidance_interval: object) -> tuple[int, int] | None:
    """``None`` (guidance at every step) or ``[t_low, t_high]``: training timesteps, ``0 <= t_low <= t_high``."""
    if guidance_interval is None:
        return None
    values = list(guidance_interval) if isinstance(guidance_interval, (list, tuple)) else []
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InputError(
            f"guidance_interval: expected null or [t_low, t_high] (training timesteps), got {guidance_interval!r}"
        )
    if not 0 <= values[0] <= values[1]:
        raise InputError(f"guidance_interval: expected 0 <= t_low <= t_high, got {values}")
    return values[0], values[1]


def constant_fill(null: torch.Tensor) -> float | None:
    """The value of a null context filled with one constant (MONAI's ``cfg_fill_value``), else ``None``."""
    flat = null.reshape(-1)
    return float(flat[0]) if flat.numel() and bool((flat == flat[0]).all()) else None


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
    guidance_interval: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Run a scheduler from ``noise``, with classifier-free guidance if ``null`` is given.

    With guidance at every step, plain DDIM/PNDM/DPM-Solver steps (no ``step_kwargs``) and a
    constant null context, this is MONAI's ``DiffusionInferer.sample`` with its ``cfg`` support;
    otherwise the same loop runs here, with the step arguments and the guidance interval.

    Args:
        model: ``model(x, timesteps=..., context=...)``.
        scheduler: a scheduler of :mod:`shared.sampling.schedulers` (its ``set_timesteps`` is called).
        noise: initial latents ``(B, C, *spatial)``.
        context: ``(B, 1, D)`` conditional contexts (or whatever the model takes as ``context``).
        null: ``(B, 1, D)`` null contexts; ``None`` for plain conditional sampling (one pass per step).
        guidance_scale: ``G >= 0`` (unused without ``null``).
        num_inference_steps: number of denoising steps.
        progress: show a progress bar.
        step_kwargs: extra arguments of ``scheduler.step`` (DDIM ``eta``, a ``generator``).
        guidance_interval: ``(t_low, t_high)``: guide (doubled batch) only at timesteps in that
            closed range, one conditional pass elsewhere; ``None`` guides at every step.

    Returns:
        Denoised latents, same shape as ``noise``.
    """
    check_guidance_settings(guidance_scale, num_inference_steps)
    interval = check_guidance_interval(guidance_interval)
    scheduler.set_timesteps(num_inference_steps=num_inference_steps, device=noise.device)
    fill = constant_fill(null) if null is not None else None
    if interval is None and not step_kwargs and (null is None or fill is not None):
        from monai.inferers import DiffusionInferer

        cfg = float(guidance_scale) if null is not None else None
        return DiffusionInferer(scheduler).sample(
            noise, model, scheduler, conditioning=context, cfg=cfg, cfg_fill_value=fill or 0.0, verbose=progress
        )
    x = noise
    for t in tqdm(scheduler.timesteps, desc="sampling", unit="step", disable=not progress):
        guided = null is not None and (interval is None or interval[0] <= int(t) <= interval[1])
        if guided:
            eps = guided_eps(model, x, t, context, null, guidance_scale)
        else:
            timesteps = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
            eps = model(x, timesteps=timesteps, context=context)
        x, _ = scheduler.step(eps.float(), t, x, **(step_kwargs or {}))  # fp32 steps under autocast
    return x


def network_evaluations(
    scheduler: object, num_inference_steps: int, guidance_interval: tuple[int, int] | None
) -> tuple[int, int]:
    """(guided steps, single-pass steps) of a guided trajectory: its cost in doubled and plain network calls."""
    scheduler.set_timesteps(num_inference_steps=num_inference_steps)
    interval = check_guidance_interval(guidance_interval)
    guided = sum(1 for t in scheduler.timesteps if interval is None or interval[0] <= int(t) <= interval[1])
    return guided, len(scheduler.timesteps) - guided


class GuidedSampler(Inferer):
    """A MONAI ``Inferer`` for a bundle's sampling loop: noise -> denoised latents.

    It holds what a config sets about sampling (the scheduler, the number of steps, ``G``, the
    guidance interval) and runs :func:`sample_with_guidance`; the bundles' inference configs
    expose it as ``inferer``.

    Args:
        scheduler: a scheduler of :func:`shared.sampling.schedulers.make_scheduler` (training noise schedule).
        num_inference_steps: denoising steps.
        guidance_scale: classifier-free guidance ``G >= 0`` (used when a null context is given).
        progress: show a progress bar over the steps.
        guidance_interval: ``[t_low, t_high]`` training timesteps where guidance applies; ``None``: all.
    """

    def __init__(
        self,
        scheduler: object,
        num_inference_steps: int,
        guidance_scale: float = 1.0,
        progress: bool = False,
        guidance_interval: list[int] | tuple[int, int] | None = None,
    ):
        check_guidance_settings(guidance_scale, num_inference_steps)
        super().__init__()
        self.scheduler = scheduler
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = float(guidance_scale)
        self.progress = progress
        self.guidance_interval = check_guidance_interval(guidance_interval)

    def with_guidance(self, guidance_scale: float) -> GuidedSampler:
        """The same sampler at another ``G`` (the scheduler and the interval are shared)."""
        return GuidedSampler(
            self.scheduler, self.num_inference_steps, guidance_scale, self.progress, self.guidance_interval
        )

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
            self.progress, step_kwargs, self.guidance_interval,
        )  # fmt: skip
