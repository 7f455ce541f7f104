"""Preparing latent-diffusion training batches: with a scalar condition and conditioning dropout
(mask LDM), with the segmentation a SPADE diffusion model receives at every step, or with a
tumour feature vector (slice-based LDM).

Classifier-free guidance (docs/method.md, section 2) trains one network both conditionally and
unconditionally: the cross-attention context is ``[c, 1]`` for a conditioned sample and
the null context ``[0, 0]`` for a dropped one (probability ``p_uncond``). At sampling
time :mod:`shared.sampling.guidance` combines the two predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from monai.engines.utils import DiffusionPrepareBatch, default_prepare_batch
from monai.inferers import DiffusionInferer

from shared.latents import LatentScaler


def make_context(c: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Cross-attention context ``(B, 1, 2)``: ``[c, 1]`` where ``keep`` else the null context ``[0, 0]``.

    Args:
        c: ``(B,)`` or ``(B, 1)`` conditions.
        keep: ``(B,)`` booleans.
    """
    c = c.reshape(-1).float()
    flag = keep.reshape(-1).to(c)
    return torch.stack([c * flag, flag], dim=-1).unsqueeze(1)


def null_context(batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The unconditional context ``[0, 0]`` for ``batch_size`` samples, ``(B, 1, 2)``."""
    return torch.zeros(batch_size, 1, 2, device=device)


class LatentPrepareBatch(DiffusionPrepareBatch):
    """Encodes a batch's images with a frozen autoencoder, scales the latents, and draws noise and timesteps.

    The trainer's inputs are the scaled latents and its target the noise; the inferer
    (``monai.inferers.DiffusionInferer``) gets ``noise``, ``timesteps`` and whatever
    :meth:`model_inputs` adds (the context, the segmentation) as keyword arguments.

    Args:
        autoencoder: frozen autoencoder with ``encode_stage_2_inputs(images)``; ``None`` when the
            batches already hold latents (encoded once before training, see
            :func:`shared.latents.encode_dataset`).
        scaler: latent scaling saved with the model.
        num_train_timesteps: diffusion steps ``T``.
    """

    def __init__(
        self, autoencoder: torch.nn.Module | None, scaler: LatentScaler, num_train_timesteps: int, **kwargs: Any
    ):
        super().__init__(num_train_timesteps=num_train_timesteps, **kwargs)
        self.autoencoder = autoencoder
        self.scaler = scaler

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C_in, *spatial)`` (or latents, without autoencoder) -> scaled latents."""
        if self.autoencoder is None:
            return self.scaler.forward(images)
        self.autoencoder.eval()
        return self.scaler.forward(self.autoencoder.encode_stage_2_inputs(images))

    def model_inputs(self, batchdata: Mapping[str, Any], latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra keyword inputs of the diffusion model for this batch (none here)."""
        return {}

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        images, _ = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        latents = self.encode(images)
        noise = self.get_noise(latents)
        timesteps = self.get_timesteps(latents)
        return latents, noise, (), {"noise": noise, "timesteps": timesteps, **self.model_inputs(batchdata, latents)}


class ConditionalLatentPrepareBatch(LatentPrepareBatch):
    """Latent batches with the cross-attention context ``[c, 1]``, dropped to ``[0, 0]`` with probability ``p_uncond``.

    Args:
        autoencoder: frozen autoencoder with ``encode_stage_2_inputs``.
        scaler: latent scaling saved with the model.
        num_train_timesteps: diffusion steps ``T``.
        condition_name: batch key of the condition ``c`` (``(B,)`` or ``(B, 1)``).
        p_uncond: probability of replacing a sample's context by the null context.
    """

    def __init__(
        self,
        autoencoder: torch.nn.Module,
        scaler: LatentScaler,
        num_train_timesteps: int,
        condition_name: str = "c",
        p_uncond: float = 0.2,
    ) -> None:
        super().__init__(autoencoder, scaler, num_train_timesteps, condition_name=condition_name)
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
        self.p_uncond = float(p_uncond)

    def model_inputs(self, batchdata: Mapping[str, Any], latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """``condition``: the context ``(B, 1, 2)``, each sample kept with probability ``1 - p_uncond``."""
        c = torch.as_tensor(batchdata[self.condition_name]).to(latents.device)
        keep = torch.rand(latents.shape[0], device=latents.device) >= self.p_uncond
        return {"condition": make_context(c, keep)}


class SegmentationLatentPrepareBatch(LatentPrepareBatch):
    """Latent batches with the one-hot segmentation a ``SPADEDiffusionModelUNet`` gets at every step.

    The segmentation stays at full resolution; SPADE resizes it to every feature map.

    Args:
        autoencoder: frozen (SPADE) autoencoder with ``encode_stage_2_inputs(image)``.
        scaler: latent scaling saved with the model.
        num_train_timesteps: diffusion steps ``T``.
        seg_key: batch key of the one-hot segmentation ``(B, K, *spatial)``.
    """

    def __init__(
        self, autoencoder: torch.nn.Module, scaler: LatentScaler, num_train_timesteps: int, seg_key: str = "seg"
    ) -> None:
        super().__init__(autoencoder, scaler, num_train_timesteps)
        self.seg_key = seg_key

    def model_inputs(self, batchdata: Mapping[str, Any], latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """``seg``: the batch's one-hot segmentation on the latents' device."""
        return {"seg": torch.as_tensor(batchdata[self.seg_key]).to(latents.device)}


class SegmentationDiffusionInferer(DiffusionInferer):
    """``DiffusionInferer`` that hands ``seg`` to any wrapped SPADE model.

    MONAI's inferer passes the segmentation only when the model *is* a
    ``SPADEDiffusionModelUNet``; under ``torchrun`` the model is wrapped in
    ``DistributedDataParallel``, so the segmentation would be dropped. This binds it first.
    """

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: Callable[..., torch.Tensor],
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: torch.Tensor | None = None,
        mode: str = "crossattn",
        seg: torch.Tensor | None = None,
    ) -> torch.Tensor:
        model = diffusion_model if seg is None else partial(diffusion_model, seg=seg)
        return super().__call__(inputs, model, noise, timesteps, condition=condition, mode=mode)


class VectorConditionLatentPrepareBatch(LatentPrepareBatch):
    """Latent batches with a condition vector per sample (the SBLDM tumour features), as ``condition``.

    The inferer hands it to the network as ``context`` (``(B, K)``), which
    :class:`shared.networks.tumour_unet.TumourConditionedUNet` embeds.

    With ``region_weight > 0`` the target is ``(noise, weight)`` for
    :class:`shared.losses.RegionWeightedLoss`: ``weight = 1 + region_weight * region`` ``(B, 1,
    *spatial)``, where ``region`` (batch key ``region_key``, from
    :func:`shared.latents.encode_dataset`) marks the tumour's latent voxels. Tumours cover well
    under 1 % of a volume, so an unweighted loss can be low while the tumour is ignored.

    Args:
        autoencoder: frozen autoencoder, or ``None`` for batches of precomputed latents.
        scaler: latent scaling saved with the model.
        num_train_timesteps: diffusion steps ``T``.
        condition_name: batch key of the vectors ``(B, K)``.
        region_weight: extra loss weight of the region's latent voxels (0: plain noise target).
        region_key: batch key of the region maps ``(B, 1, *spatial)``.
        condition_dropout: probability that a sample's vector is replaced by the null condition
            (NaN, see :func:`shared.networks.tumour_unet.null_tumour_condition`), so that the
            model also learns the unconditional prediction classifier-free guidance needs
            (0: the paper, no guidance). Drawn from torch's global generator (seeded by
            ``set_determinism``).
    """

    def __init__(
        self,
        autoencoder: torch.nn.Module | None,
        scaler: LatentScaler,
        num_train_timesteps: int,
        condition_name: str = "condition",
        region_weight: float = 0.0,
        region_key: str = "region",
        condition_dropout: float = 0.0,
    ) -> None:
        super().__init__(autoencoder, scaler, num_train_timesteps, condition_name=condition_name)
        if region_weight < 0:
            raise ValueError(f"region_weight must be >= 0, got {region_weight}")
        if not 0.0 <= float(condition_dropout) < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {condition_dropout}")
        self.region_weight = float(region_weight)
        self.region_key = region_key
        self.condition_dropout = float(condition_dropout)

    def model_inputs(self, batchdata: Mapping[str, Any], latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """``condition``: the batch's vectors ``(B, K)`` as float on the latents' device (some dropped to NaN)."""
        vectors = torch.as_tensor(batchdata[self.condition_name]).to(latents.device, torch.float32)
        vectors = vectors.reshape(latents.shape[0], -1)
        if self.condition_dropout > 0:
            dropped = torch.rand(vectors.shape[0]) < self.condition_dropout
            vectors = torch.where(dropped.to(vectors.device)[:, None], torch.full_like(vectors, float("nan")), vectors)
        return {"condition": vectors}

    def __call__(  # type: ignore[override]
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any, tuple, dict]:
        latents, noise, args, model_kwargs = super().__call__(batchdata, device, non_blocking, **kwargs)
        if self.region_weight == 0:
            return latents, noise, args, model_kwargs
        if self.region_key not in batchdata:
            raise KeyError(
                f"region_weight {self.region_weight} needs the batch key {self.region_key!r} "
                "(encode the dataset with region_channel)"
            )
        region = torch.as_tensor(batchdata[self.region_key]).to(latents.device, torch.float32)
        weight = 1.0 + self.region_weight * region.reshape(latents.shape[0], 1, *latents.shape[2:])
        return latents, (noise, weight), args, model_kwargs
