"""Sampling loops MONAI lacks: classifier-free guidance in one doubled batch (and, later, slice stacking)."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
