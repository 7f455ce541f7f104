"""The noise schedulers of every bundle's sampler, built from the training schedule's parameters.

``ddpm`` and ``ddim`` are MONAI's schedulers, ``pndm`` MONAI's ``PNDMScheduler`` (its PLMS
steps only, one network evaluation per step), and ``dpm_solver`` diffusers' multistep
DPM-Solver++ (second order) behind MONAI's scheduler interface (:class:`DPMSolverScheduler`).
All four use the betas the networks were trained with, so any of them samples a trained model.
"""

from __future__ import annotations

from typing import Any

import torch

from shared.io import InputError

#: Samplers the bundles can run (the inference configs' ``sampler`` value).
SAMPLERS = ("ddpm", "ddim", "pndm", "dpm_solver")


class DPMSolverScheduler:
    """Multistep DPM-Solver++ (diffusers' ``DPMSolverMultistepScheduler``) with MONAI's scheduler interface.

    ``set_timesteps(num_inference_steps, device)``, ``timesteps`` and ``step(eps, t, x) -> (x_prev, None)``
    as MONAI's DDIM scheduler, so MONAI inferers and :func:`shared.sampling.guidance.sample_with_guidance`
    run it unchanged. The solver keeps the previous predictions between steps; ``set_timesteps``
    starts a new trajectory.

    Args:
        betas: the training noise schedule ``(num_train_timesteps,)``.
        solver_order: 2 (DPM-Solver++(2M), the usual choice for guided sampling) or 3.
    """

    def __init__(self, betas: torch.Tensor, solver_order: int = 2):
        from diffusers import DPMSolverMultistepScheduler

        if solver_order not in (1, 2, 3):
            raise InputError(f"solver_order: expected 1, 2 or 3, got {solver_order!r}")
        self.betas = betas.detach().to(torch.float32).cpu()
        self.num_train_timesteps = len(self.betas)
        self.solver = DPMSolverMultistepScheduler(
            num_train_timesteps=self.num_train_timesteps,
            trained_betas=self.betas.numpy(),
            solver_order=solver_order,
            prediction_type="epsilon",
            algorithm_type="dpmsolver++",
            lower_order_final=True,
        )
        self.num_inference_steps: int | None = None

    @property
    def timesteps(self) -> torch.Tensor:
        """The trajectory's timesteps, largest first (``(num_inference_steps,)`` long)."""
        return self.solver.timesteps

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Start a trajectory of ``num_inference_steps`` steps (clears the solver's history)."""
        self.solver.set_timesteps(num_inference_steps, device=device)
        self.num_inference_steps = num_inference_steps

    def step(
        self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor, generator: Any = None
    ) -> tuple[torch.Tensor, None]:
        """One solver step from ``sample`` ``(B, C, *spatial)`` at ``timestep`` given the noise prediction."""
        previous = self.solver.step(model_output, timestep, sample, generator=generator, return_dict=False)[0]
        return previous, None


def make_scheduler(sampler: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> Any:
    """The scheduler named by ``sampler`` (one of :data:`SAMPLERS`) with the training noise schedule (scaled linear)."""
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler

    if sampler not in SAMPLERS:
        raise InputError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    schedule = dict(num_train_timesteps=num_train_timesteps, schedule="scaled_linear_beta", beta_start=beta_start)
    if sampler == "ddim":
        return DDIMScheduler(**schedule, beta_end=beta_end, prediction_type="epsilon", clip_sample=False)
    if sampler == "pndm":
        return PNDMScheduler(**schedule, beta_end=beta_end, prediction_type="epsilon", skip_prk_steps=True)
    training = DDPMScheduler(**schedule, beta_end=beta_end, prediction_type="epsilon", clip_sample=False)
    return DPMSolverScheduler(training.betas) if sampler == "dpm_solver" else training


def sampler_name(scheduler: Any) -> str:
    """The :data:`SAMPLERS` name of a scheduler (for manifests and step arguments)."""
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler

    kinds = {DDIMScheduler: "ddim", PNDMScheduler: "pndm", DPMSolverScheduler: "dpm_solver", DDPMScheduler: "ddpm"}
    for kind, name in kinds.items():
        if isinstance(scheduler, kind):
            return name
    raise InputError(f"scheduler: expected one of {', '.join(SAMPLERS)}, got {type(scheduler).__name__}")


def stochastic_step_kwargs(scheduler: Any, eta: float, generator: torch.Generator) -> dict[str, Any]:
    """``scheduler.step``'s noise arguments: DDIM ``eta`` + a generator, DDPM a generator, ODE solvers none."""
    name = sampler_name(scheduler)
    if name == "ddim":
        return {"eta": float(eta), "generator": generator}
    return {"generator": generator} if name == "ddpm" else {}
