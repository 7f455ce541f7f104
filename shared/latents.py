"""Latent scaling for latent diffusion: ``z_scaled = (z - shift) * scale``, saved with the model.

The usual LDM recipe is one global factor ``scale = 1 / std(z)`` over a training batch.
A probe here found per-channel latent standard deviations of 0.28 / 1.65 / 0.36 for a
label-map autoencoder, which one global factor leaves badly scaled, so per-channel
standardisation (``per_channel=True``) is available as a switch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared.io import InputError, read_json, write_json


@dataclass(frozen=True)
class LatentScaler:
    """Affine map between autoencoder latents and the diffusion model's space.

    Attributes:
        scale: one factor, or one per latent channel.
        shift: subtracted before scaling; zeros for the global recipe.
    """

    scale: tuple[float, ...]
    shift: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.scale) != len(self.shift) or not self.scale:
            raise ValueError("latent scaler: scale and shift need the same, non-zero length")
        if not all(s > 0 and s != float("inf") for s in self.scale):
            raise ValueError(f"latent scaler: scale factors must be positive and finite, got {self.scale}")

    @classmethod
    def fit(cls, latents: torch.Tensor, per_channel: bool = False) -> LatentScaler:
        """Fit on latents ``(B, C, *spatial)``: ``1/std`` over everything, or mean/std per channel."""
        if latents.ndim < 3:
            raise ValueError(f"latent scaler: expected (B, C, *spatial) latents, got shape {tuple(latents.shape)}")
        z = latents.detach().float()
        if not per_channel:
            return cls(scale=(1.0 / float(z.std()),), shift=(0.0,))
        per = z.transpose(0, 1).reshape(z.shape[1], -1)
        return cls(scale=tuple((1.0 / per.std(dim=1)).tolist()), shift=tuple(per.mean(dim=1).tolist()))

    def _view(self, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        tensor = torch.tensor(values, dtype=like.dtype, device=like.device)
        if len(values) == 1:
            return tensor.reshape(())
        if like.shape[1] != len(values):
            raise ValueError(f"latent scaler has {len(values)} channels, latents have {like.shape[1]}")
        return tensor.reshape(1, -1, *([1] * (like.ndim - 2)))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Autoencoder latents ``(B, C, ...)`` -> diffusion space."""
        return (latents - self._view(self.shift, latents)) * self._view(self.scale, latents)

    def inverse(self, scaled: torch.Tensor) -> torch.Tensor:
        """Diffusion space ``(B, C, ...)`` -> autoencoder latents."""
        return scaled / self._view(self.scale, scaled) + self._view(self.shift, scaled)

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON (atomically)."""
        write_json(path, {"scale": list(self.scale), "shift": list(self.shift)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentScaler:
        """Read a scaler saved by :meth:`save`; a missing file is an :class:`InputError` naming it."""
        data = read_json(path)
        try:
            return cls(scale=tuple(float(v) for v in data["scale"]), shift=tuple(float(v) for v in data["shift"]))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{path}: not a latent scaler file ({error})") from error


@torch.no_grad()
def fit_or_load_scaler(
    autoencoder: torch.nn.Module | None,
    dataset: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    per_channel: bool = False,
    max_items: int = 16,
    image_key: str = "image",
) -> LatentScaler:
    """The scaler saved at ``path``, or one fitted on the first ``max_items`` encoded items and saved there.

    Loading when present keeps a resumed training on the same latent scale. Fitting reads the
    dataset itself (not a loader), so every process of a multi-process run fits the same scaler.
    With ``autoencoder=None`` the dataset's items already hold latents.
    """
    if Path(path).is_file():
        return LatentScaler.load(path)
    if len(dataset) == 0:
        raise InputError(f"{path}: no training data to fit the latent scaler on")
    if autoencoder is not None:
        autoencoder.eval()
    latents = []
    for i in range(min(max_items, len(dataset))):
        item = torch.as_tensor(dataset[i][image_key])[None].to(device)
        latents.append((item if autoencoder is None else autoencoder.encode_stage_2_inputs(item)).cpu())
    scaler = LatentScaler.fit(torch.cat(latents), per_channel=per_channel)
    scaler.save(path)
    return scaler


@torch.no_grad()
def latent_shape(autoencoder: torch.nn.Module, in_channels: int, shape: Sequence[int], device: Any) -> tuple[int, ...]:
    """``(C_latent, *latent_spatial)`` the autoencoder's encoder gives for an ``in_channels`` x ``shape`` input.

    An autoencoder with its own ``latent_shape`` method (the slice stack: one slice suffices) answers itself.
    """
    if hasattr(autoencoder, "latent_shape"):
        return tuple(autoencoder.latent_shape(in_channels, shape, device))
    probe = torch.zeros(1, in_channels, *shape, device=device)
    return tuple(autoencoder.encode_stage_2_inputs(probe).shape[1:])


@torch.no_grad()
def encode_dataset(
    autoencoder: torch.nn.Module,
    dataset: Sequence[dict[str, Any]],
    device: torch.device | str = "cpu",
    image_key: str = "image",
    keep: Sequence[str] = (),
    region_channel: int | None = None,
    region_key: str = "region",
) -> list[dict[str, Any]]:
    """Encode every item once with a frozen autoencoder: ``[{image_key: latent (C, ...), **kept keys}]``.

    For diffusion training with an expensive encoder (a slice VAE runs once per slice): the
    latents are computed before training instead of at every iteration.

    Args:
        region_channel: a channel of the image (e.g. 1, the tumour mask in ``[-1, 1]``) whose
            foreground (> 0) is also stored on the latent grid as ``region_key``: a ``(1, *latent
            spatial)`` float map, 1 where any voxel of the latent's receptive cell is foreground.
            ``None`` stores no region.
    """
    from tqdm.auto import tqdm

    autoencoder.eval()
    encoded = []
    for i in tqdm(range(len(dataset)), desc="encoding training volumes", unit="volume", disable=None):
        item = dataset[i]
        image = torch.as_tensor(item[image_key])[None].to(device)
        latent = autoencoder.encode_stage_2_inputs(image)[0].cpu()
        entry = {image_key: latent, **{key: item[key] for key in keep}}
        if region_channel is not None:
            entry[region_key] = latent_region(image[0, region_channel] > 0, latent.shape[1:])
        encoded.append(entry)
    return encoded


def latent_region(foreground: torch.Tensor, latent_spatial: Sequence[int]) -> torch.Tensor:
    """A foreground mask ``(*spatial)`` max-pooled to the latent grid: ``(1, *latent_spatial)`` in {0, 1}."""
    functional = torch.nn.functional
    pool = functional.adaptive_max_pool3d if len(latent_spatial) == 3 else functional.adaptive_max_pool2d
    return pool(foreground.float()[None, None].cpu(), tuple(int(s) for s in latent_spatial))[0]
