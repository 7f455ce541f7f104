"""Built-in demo data: procedural brain label maps with FLAIR-like images, and tumour cases.

Everything is deterministic by seed and needs no download. See :mod:`shared.demo.dataset`
for writing whole datasets to disk.
"""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
