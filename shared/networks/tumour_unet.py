"""The tumour-conditioned 3D diffusion UNet of SBLDM (docs/method.md, section 4).

A MONAI ``DiffusionModelUNet`` (3D, no attention) that also receives the tumour feature
vector ``c`` ``(B, 9)``: an MLP ``tau`` (9 -> 256 -> 512, SiLU) embeds it, and the embedding is
fused into the network in one of two ways (``fusion``):

- ``"scale_shift"`` (the paper): every residual block's second normalisation becomes
  ``GroupNorm(h) * (1 + scale) + shift`` with ``(scale, shift)`` projected from ``tau(c)``;
- ``"time_embedding"`` (the authors' code): ``tau(c)`` is added to the timestep embedding, so it
  reaches every residual block the way time does (``tau``'s output size is then the time
  embedding's, ``4 * channels[0]``).

``c`` comes in as the ``context`` argument, so MONAI's ``DiffusionInferer`` and the
project's samplers call this network like any conditioned ``DiffusionModelUNet``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from torch import nn

from shared.networks.injection import AddEmbedding, EmbeddingSlot, ScaleShiftNorm

FUSIONS = ("scale_shift", "time_embedding")


class TumourConditionedUNet(DiffusionModelUNet):
    """3D diffusion UNet conditioned on a tumour feature vector.

    Args:
        in_channels, out_channels: latent channels of the slice VAE.
        channels: channels per level (authors: 64, 128, 256, 512).
        num_res_blocks: residual blocks per level, one value or one per level. The paper says 1,
            the authors' code 2 on its three resolution levels; MONAI's UNet downsamples after
            every level but the last, so it has one level more at 512 channels. The default
            (2, 2, 2, 1) keeps the authors' blocks and adds one block at that extra level: with
            the slice VAE the total is within 5% of the paper's 159 M parameters.
        condition_dim: length of ``c`` (9 tumour features).
        condition_hidden: hidden size of ``tau``.
        condition_embed_dim: output size of ``tau`` for ``"scale_shift"`` (paper: 512).
        fusion: ``"scale_shift"`` or ``"time_embedding"``.
        **kwargs: further ``DiffusionModelUNet`` arguments (attention is off by default).
    """

    def __init__(
        self,
        in_channels: int = 6,
        out_channels: int = 6,
        channels: Sequence[int] = (64, 128, 256, 512),
        num_res_blocks: int | Sequence[int] = (2, 2, 2, 1),
        norm_num_groups: int = 32,
        condition_dim: int = 9,
        condition_hidden: int = 256,
        condition_embed_dim: int = 512,
        fusion: str = "scale_shift",
        **kwargs,
    ) -> None:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        kwargs.setdefault("attention_levels", (False,) * len(channels))
        super().__init__(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            num_res_blocks=num_res_blocks,
            norm_num_groups=norm_num_groups,
            **kwargs,
        )
        self.fusion = fusion
        self.condition_dim = int(condition_dim)
        time_embed_dim = 4 * channels[0]
        embed_dim = condition_embed_dim if fusion == "scale_shift" else time_embed_dim
        self.condition_mlp = nn.Sequential(
            nn.Linear(condition_dim, condition_hidden), nn.SiLU(), nn.Linear(condition_hidden, embed_dim)
        )
        self._slot = EmbeddingSlot()
        if fusion == "time_embedding":
            self.time_embed = AddEmbedding(self.time_embed, self._slot)
        else:
            for block in self.modules():
                if isinstance(block, DiffusionUNetResnetBlock):
                    block.norm2 = ScaleShiftNorm(block.norm2, block.out_channels, embed_dim, self._slot)

    def condition_vectors(self, context: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``context`` ``(B, 9)`` or ``(B, 1, 9)`` -> ``(B, 9)``; refuses a missing or wrong-length vector.

        A row of NaN (:func:`null_tumour_condition`) means "no condition": its embedding is zero,
        the unconditional branch of classifier-free guidance (trained with ``condition_dropout``).
        """
        if context is None:
            raise ValueError(f"this UNet is conditioned: pass context=(B, {self.condition_dim}) tumour vectors")
        if context.shape[-1] != self.condition_dim or context.numel() != batch * self.condition_dim:
            raise ValueError(
                f"tumour condition vectors need {self.condition_dim} values per sample, "
                f"got shape {tuple(context.shape)}"
            )
        return context.reshape(batch, self.condition_dim)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """Noise prediction for latents ``x`` ``(B, C, h, w, D)`` at ``timesteps`` ``(B,)`` given ``context`` ``c``."""
        vectors = self.condition_vectors(context, x.shape[0]).to(x.dtype)
        unconditional = torch.isnan(vectors).all(dim=1, keepdim=True)
        embedding = self.condition_mlp(torch.where(unconditional, torch.zeros_like(vectors), vectors))
        with self._slot.holding(torch.where(unconditional, torch.zeros_like(embedding), embedding)):
            return super().forward(x, timesteps, **kwargs)


def null_tumour_condition(batch: int, condition_dim: int = 9, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(B, condition_dim)`` of NaN: the "no condition" input of :class:`TumourConditionedUNet`."""
    return torch.full((batch, condition_dim), float("nan"), device=device)
