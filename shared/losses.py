"""Losses MONAI lacks as one piece: the label-map VAE loss (Dice + cross-entropy + KL), the slice VAE loss
and a region-weighted diffusion loss."""

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
        kl_weight: weight of the KL term (docs/method.md: 1e-6).
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


class SliceVAELoss(torch.nn.Module):
    """``L1 + ssim_weight * (1 - SSIM) + perceptual_weight * perceptual + kl_weight * KL`` for the slice VAE.

    The SBLDM first-stage loss (docs/method.md, section 4). Slices are ``[image, mask]`` in ``[-1, 1]``;
    SSIM is computed over both channels with ``data_range=2``. The perceptual term (on the image
    channel only, as the authors do) is optional: pass a loss built from local weights.

    Args:
        kl_weight: weight of the KL term (docs/method.md: 1e-6).
        ssim_weight: weight of ``1 - SSIM``.
        perceptual_loss: optional ``loss(recon_image, image)`` on ``(B, 1, H, W)``.
        perceptual_weight: its weight.
        win_size: SSIM window (odd, at most the slice size).
        spatial_dims: 2 for slices; 3 for the 3D-LDM baseline's volume autoencoder.
        mask_dice_weight: weight of a Dice loss on the mask channel (channel 1, ``[-1, 1]`` read as
            ``[0, 1]``), over the whole batch. Not in the paper: tumours fill well under 1 % of the
            voxels, and without it a short training reconstructs the mask channel as all background.

    ``forward(outputs, target)``: ``outputs = (recon (B, 2, H, W), z_mu, z_sigma)`` as returned by
    :class:`shared.networks.slice_vae.SliceVAE`; ``target`` = the input slices ``(B, 2, H, W)``.
    """

    def __init__(
        self,
        kl_weight: float = 1e-6,
        ssim_weight: float = 1.0,
        perceptual_loss: torch.nn.Module | None = None,
        perceptual_weight: float = 1.0,
        win_size: int = 7,
        spatial_dims: int = 2,
        mask_dice_weight: float = 0.0,
    ) -> None:
        super().__init__()
        from monai.losses import DiceLoss, SSIMLoss

        self.kl_weight = float(kl_weight)
        self.ssim_weight = float(ssim_weight)
        self.ssim = SSIMLoss(spatial_dims=spatial_dims, data_range=2.0, win_size=win_size)
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = float(perceptual_weight)
        self.mask_dice_weight = float(mask_dice_weight)
        self.dice = DiceLoss(batch=True)

    def forward(self, outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        recon, z_mu, z_sigma = outputs
        loss = torch.nn.functional.l1_loss(recon, target) + self.kl_weight * kl_divergence(z_mu, z_sigma)
        if self.ssim_weight:
            loss = loss + self.ssim_weight * self.ssim(recon.float().clamp(-1, 1), target.float())
        if self.perceptual_loss is not None and self.perceptual_weight:
            loss = loss + self.perceptual_weight * self.perceptual_loss(recon[:, :1].float(), target[:, :1].float())
        if self.mask_dice_weight:
            soft_mask = ((recon[:, 1:2].float() + 1.0) / 2.0).clamp(0.0, 1.0)
            loss = loss + self.mask_dice_weight * self.dice(soft_mask, (target[:, 1:2].float() > 0).float())
        return loss


class RegionWeightedLoss(torch.nn.Module):
    """An element-wise loss averaged with per-voxel weights: ``sum(w * l(pred, target)) / sum(w * 1)``.

    ``forward(pred, target)``: ``target`` is a tensor (plain mean of the element-wise loss) or a
    pair ``(target, weight)`` with ``weight`` broadcastable to ``pred`` (e.g. ``(B, 1, *spatial)``
    from :class:`shared.engines.diffusion.VectorConditionLatentPrepareBatch`). Normalising by the
    weights keeps the loss on the scale of the unweighted one.

    Args:
        elementwise: a loss with ``reduction="none"`` (default ``torch.nn.L1Loss``).
    """

    def __init__(self, elementwise: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.elementwise = elementwise if elementwise is not None else torch.nn.L1Loss(reduction="none")
        if getattr(self.elementwise, "reduction", "none") != "none":
            raise ValueError("RegionWeightedLoss needs an element-wise loss (reduction='none')")

    def forward(self, pred: torch.Tensor, target: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if isinstance(target, torch.Tensor):
            return self.elementwise(pred, target).mean()
        target, weight = target
        weight = weight.to(pred).expand_as(pred)
        return (self.elementwise(pred, target) * weight).sum() / weight.sum()
