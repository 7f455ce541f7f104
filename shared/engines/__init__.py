"""Ignite engine pieces MONAI lacks: conditional latent-diffusion batches (and, later, the VAE-GAN step)."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
