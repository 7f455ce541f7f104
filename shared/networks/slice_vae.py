"""The 2D slice VAE of SBLDM (docs/method.md, section 4): image and mask of one axial slice, jointly.

A MONAI ``AutoencoderKL`` (2D, ``[image, mask]`` = 2 channels in and out) whose residual
blocks can also receive the slice's depth: the slice index ``i`` goes through a sinusoidal
embedding and an MLP to ``l(i)`` ``(B, E)``, which every residual block of encoder and decoder
adds, projected per channel, after its first convolution (the paper's positional embedder; the
authors' released code has the hook but leaves it off). ``position_embedding=False`` gives
MONAI's plain ``AutoencoderKL``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import AutoencoderKL
from monai.networks.nets.autoencoderkl import AEKLResBlock
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn

from shared.networks.injection import AddProjectedEmbedding, EmbeddingSlot


class SliceVAE(AutoencoderKL):
    """2D KL autoencoder for ``(B, 2, H, W)`` slices with an optional slice-position embedding.

    Args:
        in_channels, out_channels: 2 (image, mask) in the paper.
        channels: channels per level; ``len(channels) - 1`` downsamplings by 2.
        latent_channels: latent channels ``C`` (paper code: 6).
        num_res_blocks: residual blocks per level.
        norm_num_groups: GroupNorm groups.
        position_embedding: inject ``l(i)`` into every residual block (encoder and decoder).
        position_dim: sinusoidal embedding size of the slice index.
        position_embed_dim: ``E``, the MLP's output size.
        **kwargs: further ``AutoencoderKL`` arguments (attention is off by default, as in the paper).
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 2,
        channels: Sequence[int] = (128, 256, 512, 512),
        latent_channels: int = 6,
        num_res_blocks: int | Sequence[int] = 1,
        norm_num_groups: int = 32,
        position_embedding: bool = True,
        position_dim: int = 128,
        position_embed_dim: int = 512,
        **kwargs,
    ) -> None:
        kwargs.setdefault("attention_levels", (False,) * len(channels))
        kwargs.setdefault("with_encoder_nonlocal_attn", False)
        kwargs.setdefault("with_decoder_nonlocal_attn", False)
        super().__init__(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            latent_channels=latent_channels,
            num_res_blocks=num_res_blocks,
            norm_num_groups=norm_num_groups,
            **kwargs,
        )
        self.position_embedding = bool(position_embedding)
        if self.position_embedding and self.use_checkpoint:
            # a checkpointed block re-runs in the backward pass, after the embedding is released
            raise ValueError("slice VAE: use_checkpoint is not supported with position_embedding")
        self.position_dim = int(position_dim)
        self._slot = EmbeddingSlot()
        if self.position_embedding:
            width = position_embed_dim
            self.position_mlp = nn.Sequential(nn.Linear(position_dim, width), nn.SiLU(), nn.Linear(width, width))
            for block in (*self.encoder.blocks, *self.decoder.blocks):
                if isinstance(block, AEKLResBlock):
                    block.conv1 = AddProjectedEmbedding(block.conv1, block.out_channels, position_embed_dim, self._slot)

    def embed_positions(self, positions: torch.Tensor | None, batch: int, like: torch.Tensor) -> torch.Tensor | None:
        """Slice indices ``(B,)`` -> ``l(i)`` ``(B, E)``; ``None`` when the embedding is off.

        Raises:
            ValueError: the embedding is on and ``positions`` is missing or not one per slice.
        """
        if not self.position_embedding:
            return None
        if positions is None:
            raise ValueError("this slice VAE embeds slice positions: pass positions=(B,) slice indices")
        positions = torch.as_tensor(positions, device=like.device).reshape(-1)
        if positions.numel() != batch:
            raise ValueError(f"positions: expected {batch} slice indices, got {positions.numel()}")
        sinusoid = get_timestep_embedding(positions.float(), self.position_dim).to(like.dtype)
        return self.position_mlp(sinusoid)

    def _with_positions(self, function, tensor: torch.Tensor, positions: torch.Tensor | None):
        embedding = self.embed_positions(positions, tensor.shape[0], tensor)
        if embedding is None:
            return function(tensor)
        with self._slot.holding(embedding):
            return function(tensor)

    def encode(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Slices ``(B, 2, H, W)`` at depths ``positions`` ``(B,)`` -> ``(z_mu, z_sigma)`` ``(B, C, h, w)``."""
        return self._with_positions(super().encode, x, positions)

    def decode(self, z: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``(B, C, h, w)`` at depths ``positions`` ``(B,)`` -> slices ``(B, 2, H, W)``."""
        return self._with_positions(super().decode, z, positions)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction ``(B, 2, H, W)`` from a posterior sample, with ``z_mu`` and ``z_sigma``."""
        z_mu, z_sigma = self.encode(x, positions)
        return self.decode(self.sampling(z_mu, z_sigma), positions), z_mu, z_sigma

    def encode_stage_2_inputs(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean ``(B, C, h, w)``: the latent a slice contributes to the stacked volume."""
        return self.encode(x, positions)[0]

    def decode_stage_2_outputs(self, z: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(z, positions)
