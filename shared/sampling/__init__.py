"""Sampling MONAI lacks: the sampling loop as a MONAI Inferer with classifier-free guidance (``guidance``),
DPM-Solver++ behind MONAI's scheduler interface (``schedulers``), the generation jobs of the three
bundles (``mask_generation``, ``spade_generation``, ``tumour_generation``), generation shared among
torchrun ranks with per-sample resume (``sharding``), and the papers' evaluations (Figure 3:
``mask_evaluation``; Table 1: ``tumour_evaluation``). Condition requests are in ``shared.conditioning``."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)
