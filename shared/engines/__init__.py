"""Ignite engine pieces MONAI lacks: conditional latent-diffusion batches (and, later, the VAE-GAN step)."""
