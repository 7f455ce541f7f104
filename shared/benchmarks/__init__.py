"""Project code: speed and accuracy benchmarks of the bundles' networks and of nnU-Net set assembly."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
