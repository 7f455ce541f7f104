"""Losses MONAI lacks as one piece: the label-map VAE loss (Dice + cross-entropy + KL)."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL of ``N(mu, sigma^2)`` from ``N(0, 1)``, summed over latent voxels, averaged over the batch."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1.0)
    return kl.flatten(1).sum(1).mean()


class LabelAutoencoderLoss(torch.nn.Module):
    """``DiceCE(logits, labels) + kl_weight * KL`` for an ``AutoencoderKL`` that reconstructs label maps.

    Args:
        kl_weight: weight of the KL term (SPEC: 1e-6).
        lambda_dice: weight of the Dice term (0 gives plain cross-entropy).
        lambda_ce: weight of the cross-entropy term.

    ``forward(outputs, target)``: ``outputs = (logits (B, K, ...), z_mu, z_sigma)`` as returned
    by ``AutoencoderKL.forward``; ``target`` = class indices ``(B, 1, ...)``.
    """

    def __init__(self, kl_weight: float = 1e-6, lambda_dice: float = 1.0, lambda_ce: float = 1.0) -> None:
        super().__init__()
        self.kl_weight = float(kl_weight)
        self.segmentation = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=lambda_dice, lambda_ce=lambda_ce)

    def forward(self, outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        logits, z_mu, z_sigma = outputs
        return self.segmentation(logits, target) + self.kl_weight * kl_divergence(z_mu, z_sigma)
