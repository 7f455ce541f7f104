"""Project code for nnU-Net: set assembly, training, classical augmentation, domain randomisation, metrics."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
