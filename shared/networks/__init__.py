"""Networks MONAI lacks, built from MONAI's own: the slice VAE with a slice-position embedding,
its slice-stacking 3D wrapper, and the tumour-conditioned 3D diffusion UNet."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
