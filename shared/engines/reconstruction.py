"""Autoencoder training where the target is the input itself: its batches, and validation on the posterior mean."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import PrepareBatch, default_prepare_batch
from monai.inferers import Inferer


class ReconstructionPrepareBatch(PrepareBatch):
    """``(image, image, (), {name: batch[key]})``: the network reconstructs its input, with extra keyword inputs.

    Used for the slice VAE (``extra_keys={"positions": "position"}``: ``network(slices, positions=...)``)
    and for the 3D-LDM baseline's autoencoder (no extra inputs), so no second copy of every
    image has to be cached as a "label".

    Args:
        extra_keys: network keyword -> batch key.
    """

    def __init__(self, extra_keys: Mapping[str, str] | None = None) -> None:
        self.extra_keys = dict(extra_keys or {})

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict[str, Any]]:
        image, _ = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        extra = {name: torch.as_tensor(batchdata[key]).to(device) for name, key in self.extra_keys.items()}
        return image, image, (), extra


class PosteriorMeanInferer(Inferer):
    """A KL autoencoder's reconstruction from its posterior mean: ``decode(mu)``, ``(B, C, *spatial)``.

    The autoencoder's own forward decodes a posterior *sample*, so a validation metric on it moves
    with the sampling noise from one evaluation to the next (a slice VAE's validation PSNR swung
    by several dB between epochs whose mean reconstructions differed by less than one). Validation
    on the mean is repeatable and scores what latent diffusion uses: the latent of a volume is the
    posterior mean. Keyword inputs (the slice VAE's ``positions``) go to both halves.
    """

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        z_mu, _ = network.encode(inputs, *args, **kwargs)
        return network.decode(z_mu, *args, **kwargs)
