"""The fast path's accuracy guard: the same samples generated twice (same seed, same initial noise),
once by eager fp32 and once by the fast path, compared file by file.

Images are compared by PSNR (MONAI ``PSNRMetric``; data range given by the caller, e.g. 2 for
FLAIR in ``[-1, 1]`` or 1 for SPADE images in ``[0, 1]``), masks and label maps by the mean Dice
of the classes present in the reference (:func:`shared.evaluation.segmentation_metrics.dice` per class).
Issue 7's tolerance: PSNR >= 35 dB, Dice >= 0.98.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from shared.evaluation.segmentation_metrics import dice
from shared.io import InputError, load_image


def image_psnr(reference: np.ndarray, candidate: np.ndarray, data_range: float) -> float:
    """PSNR in dB of ``candidate`` against ``reference`` (same shape, any rank); ``inf`` when identical."""
    from monai.metrics import PSNRMetric

    if reference.shape != candidate.shape:
        raise InputError(f"image shapes differ: {reference.shape} vs {candidate.shape}")
    as_batch = [torch.as_tensor(np.asarray(v, dtype=np.float32))[None, None] for v in (candidate, reference)]
    return float(PSNRMetric(max_val=data_range)(*as_batch).item())


def label_dice(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean Dice over the nonzero classes of ``reference`` (1.0 when both are empty)."""
    classes = [int(k) for k in np.unique(reference) if k != 0]
    if not classes:
        return dice(candidate, reference)
    return float(np.mean([dice(candidate, reference, labels=k) for k in classes]))


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern))


def compare_outputs(
    reference_dir: str | os.PathLike,
    candidate_dir: str | os.PathLike,
    images: str | None = "images/*.nii.gz",
    labels: str | None = "labels/*.nii.gz",
    data_range: float = 2.0,
) -> dict[str, float]:
    """Compare two generation runs file by file (same names in both folders).

    Args:
        reference_dir, candidate_dir: the output folders of the fp32 and the fast run.
        images: glob of the image files inside each folder (``None``: no images).
        labels: glob of the mask / label-map files (``None``: none).
        data_range: the images' value range for PSNR.

    Returns:
        ``{"samples", "psnr_min", "psnr_mean", "dice_min", "dice_mean"}`` (NaN for what was not compared).
    """
    reference_dir, candidate_dir = Path(reference_dir), Path(candidate_dir)
    result = {"samples": 0.0, "psnr_min": float("nan"), "psnr_mean": float("nan")}
    result.update(dice_min=float("nan"), dice_mean=float("nan"))
    for kind, pattern in (("psnr", images), ("dice", labels)):
        if pattern is None:
            continue
        reference_files = _files(reference_dir, pattern)
        if not reference_files:
            raise InputError(f"{reference_dir}: no files match {pattern}")
        values = []
        for reference in reference_files:
            candidate = candidate_dir / reference.relative_to(reference_dir)
            if not candidate.is_file():
                raise InputError(f"{candidate}: missing (the reference run has {reference.name})")
            a, b = load_image(reference).array, load_image(candidate).array
            values.append(image_psnr(a, b, data_range) if kind == "psnr" else label_dice(a, b))
        result["samples"] = float(len(values))
        result[f"{kind}_min"], result[f"{kind}_mean"] = float(np.min(values)), float(np.mean(values))
    return result
