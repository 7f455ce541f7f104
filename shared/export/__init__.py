"""Project code: packaging. Model-zoo bundle export (``bundle_export``, with the run-time code each
bundle needs found and vendored by ``runtime_code``), the nnU-Net segmenter as a MONAI bundle
(``segmenter_export``), and the checksum-verified starter weights (``starter_weights``)."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
