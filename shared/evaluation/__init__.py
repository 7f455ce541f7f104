"""Project code: measuring results. Segmentation metrics (``segmentation_metrics``: Dice, IoU,
volume error, per-case tables and plots), the statistics of a study's variants
(``study_statistics``: hierarchical bootstrap over seeds and cases, Holm), and the tissue
contrast of generated images (``fidelity``)."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
