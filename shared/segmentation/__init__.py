"""Project code for nnU-Net: set assembly, training and prediction, classical augmentation, domain randomisation."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
