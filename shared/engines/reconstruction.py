"""Batches for autoencoder training where the target is the input itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import PrepareBatch, default_prepare_batch


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
