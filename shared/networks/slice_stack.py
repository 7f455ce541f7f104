"""3D volumes through a 2D slice VAE: encode every axial slice and stack the latents along depth.

:class:`SliceStackAutoencoder` gives a :class:`~shared.networks.slice_vae.SliceVAE` the
interface of a 3D MONAI autoencoder (``encode_stage_2_inputs`` / ``decode_stage_2_outputs`` on
``(B, C, H, W, D)``), so latent-diffusion training and sampling code written for 3D
autoencoders works with it unchanged: ``(B, 2, 192, 192, 96)`` volumes <-> ``(B, C, 24, 24, 96)``
stacked latents. Slices go through the VAE in chunks of ``chunk_size`` (memory stays bounded:
decoding all 96 slices of a 192x192 volume at once takes ~10 GB on a CPU), each with its depth
index as position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from shared.networks.slice_vae import SliceVAE


def volume_to_slices(volumes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, H, W, D)`` -> slices ``(B*D, C, H, W)`` (volume-major) and their depth indices ``(B*D,)``."""
    if volumes.ndim != 5:
        raise ValueError(f"expected volumes (B, C, H, W, D), got shape {tuple(volumes.shape)}")
    batch, _, _, _, depth = volumes.shape
    slices = volumes.permute(0, 4, 1, 2, 3).reshape(batch * depth, *volumes.shape[1:4])
    positions = torch.arange(depth, device=volumes.device).repeat(batch)
    return slices, positions


def slices_to_volume(slices: torch.Tensor, batch: int) -> torch.Tensor:
    """Inverse of :func:`volume_to_slices`: ``(B*D, C, H, W)`` -> ``(B, C, H, W, D)``."""
    depth = slices.shape[0] // batch
    return slices.reshape(batch, depth, *slices.shape[1:]).permute(0, 2, 3, 4, 1)


class SliceStackAutoencoder(nn.Module):
    """A 3D autoencoder view of a 2D slice VAE.

    Args:
        vae: the slice VAE.
        chunk_size: slices per VAE call (encode and decode).
    """

    def __init__(self, vae: SliceVAE, chunk_size: int = 8) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.vae = vae
        self.chunk_size = int(chunk_size)

    def _chunked(self, function: Callable, slices: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                function(slices[start : start + self.chunk_size], positions[start : start + self.chunk_size])
                for start in range(0, slices.shape[0], self.chunk_size)
            ]
        )

    @torch.no_grad()
    def latent_shape(
        self, in_channels: int, shape: Sequence[int], device: torch.device | str = "cpu"
    ) -> tuple[int, ...]:
        """``(C, h, w, D)`` of the stacked latent of a ``(in_channels, H, W, D)`` volume (one slice encoded)."""
        probe = torch.zeros(1, in_channels, *shape[:2], device=device)
        latent = self.vae.encode_stage_2_inputs(probe, torch.zeros(1, dtype=torch.long, device=device))
        return (*latent.shape[1:], int(shape[2]))

    def encode_stage_2_inputs(self, volumes: torch.Tensor) -> torch.Tensor:
        """Volumes ``(B, 2, H, W, D)`` -> stacked posterior means ``(B, C, h, w, D)``."""
        slices, positions = volume_to_slices(volumes)
        latents = self._chunked(self.vae.encode_stage_2_inputs, slices, positions)
        return slices_to_volume(latents, volumes.shape[0])

    def decode_stage_2_outputs(self, latents: torch.Tensor) -> torch.Tensor:
        """Stacked latents ``(B, C, h, w, D)`` -> volumes ``(B, 2, H, W, D)`` (raw decoder output)."""
        slices, positions = volume_to_slices(latents)
        decoded = self._chunked(self.vae.decode_stage_2_outputs, slices, positions)
        return slices_to_volume(decoded, latents.shape[0])
