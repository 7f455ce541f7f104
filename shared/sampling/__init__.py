"""Sampling MONAI lacks: classifier-free guidance in one doubled batch, generation jobs, condition requests."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
