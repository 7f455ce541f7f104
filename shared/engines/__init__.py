"""Ignite engine pieces MONAI lacks: conditional latent-diffusion batches for MONAI's ``SupervisedTrainer``
(``diffusion``), the VAE-GAN trainer of the SPADE autoencoder (``vae_gan``), reconstruction batches
of the autoencoders (``reconstruction``), and one-shot jobs (inference, evaluation, preparation) run
as Ignite engines from named arguments (``job``)."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
