"""Preparing FLAIR + tumour-mask pairs for the slice-based LDM (docs/method.md, section 4).

Sources:

- **BraTS layout**: a folder with one subfolder per case holding the FLAIR (``*flair.nii.gz``,
  or ``*t2f.nii.gz`` in BraTS 2023) and the segmentation (``*seg.nii.gz``);
- a MONAI **datalist** (``image`` = FLAIR, ``label`` = mask), e.g. the built-in demo tumour
  cases ``outputs/demo/data/tumours/datalist.json``, or a ``.csv`` table of image, label paths
  (:mod:`shared.datasets.layouts`).

Every case is checked (FLAIR and mask on one grid), reoriented to RAS (so the last array axis
runs inferior -> superior and axial slices are ``[..., k]``), resampled to the working grid
(default 192x192x96: image trilinear with anti-aliasing, mask by thresholding its resampled
fraction at 0.5), the whole tumour taken as ``seg > 0``, and the image min-max scaled per
volume to ``[-1, 1]`` (the authors' scaling). The output folder holds ``images/``, ``labels/``
(mask 0/1), a datalist whose items carry the case's normalised tumour vector under
``condition``, and the condition table ``tumours.csv`` with ``tumours_normaliser.json`` (volume
and area maxima of the training split, docs/method.md, section 1).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from shared.bounds import Fraction, Positive
from shared.conditioning.features import TUMOUR_FEATURE_NAMES
from shared.conditioning.tables import (
    TUMOUR_COLUMNS,
    fit_tumour_normaliser,
    measure_tumour_rows,
    normalise_tumour_rows,
)
from shared.datasets.layouts import CaseFiles, find_cases
from shared.io import InputError, atomic_folder, load_pair, save_volume, write_csv, write_datalist, write_json

logger = logging.getLogger(__name__)

#: The working grid of the paper.
PAPER_SHAPE: tuple[int, int, int] = (192, 192, 96)


def find_tumour_cases(source: str | os.PathLike) -> list[CaseFiles]:
    """The cases of a BraTS-layout folder, a datalist (``.json``) or a table (``.csv``).

    Raises:
        InputError: no such source, no case, a case folder without FLAIR or segmentation, two
            cases of one name (see :func:`shared.datasets.layouts.find_cases`).
    """
    source = Path(source)
    layout = {".json": "datalist", ".csv": "csv"}.get(source.suffix.lower(), "brats")
    return list(find_cases(source, layout).cases)


def resampled_affine(affine: np.ndarray, old_shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """Affine of a grid resampled from ``old_shape`` to ``new_shape`` over the same field of view."""
    ratio = np.asarray(old_shape, dtype=np.float64) / np.asarray(new_shape, dtype=np.float64)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(ratio)
    index_map[:3, 3] = (ratio - 1.0) / 2.0  # voxel centres, as interpolation without align_corners
    return np.asarray(affine, dtype=np.float64) @ index_map


def _resize(array: np.ndarray, shape: Sequence[int], mode: str) -> np.ndarray:
    from monai.transforms import Resize

    resize = Resize(spatial_size=tuple(shape), mode=mode, anti_aliasing=mode != "nearest")
    return np.asarray(resize(torch.as_tensor(array, dtype=torch.float32)[None]))[0]


def min_max_to_signed_unit(image: np.ndarray) -> np.ndarray:
    """Min-max scaling of one volume to ``[-1, 1]`` (a constant volume maps to -1)."""
    low, high = float(image.min()), float(image.max())
    if high <= low:
        return np.full(image.shape, -1.0, dtype=np.float32)
    return (2.0 * (image - low) / (high - low) - 1.0).astype(np.float32)


def preprocess_case(case: CaseFiles, shape: Sequence[int] = PAPER_SHAPE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image in [-1, 1], mask 0/1 uint8, affine)`` of one case on the working grid ``shape``.

    Raises:
        InputError: unreadable files, or FLAIR and segmentation on different grids.
    """
    image, label = load_pair(case.image, case.label)
    image, label = image.to_ras(), label.to_ras()
    affine = resampled_affine(image.affine, image.array.shape, shape)
    resized = _resize(image.array, shape, "trilinear")
    mask = _resize((label.array > 0).astype(np.float32), shape, "trilinear") >= 0.5
    return min_max_to_signed_unit(resized), mask.astype(np.uint8), affine


def prepare_tumour_dataset(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    shape: Sequence[Positive] = PAPER_SHAPE,
    validation_fraction: Fraction = 0.1,
) -> Path:
    """Preprocess every case of ``source`` into ``output_dir`` and write datalist and condition table.

    Args:
        source: BraTS-layout folder or datalist.
        output_dir: destination (``images/``, ``labels/``, ``datalist.json``, ``tumours.csv``,
            ``tumours_normaliser.json``, ``dataset.json``).
        shape: working grid ``(X, Y, Z)``; ``Z`` is the slice axis.
        validation_fraction: the last fraction of cases (sorted by name) goes to ``validation``.

    Returns:
        The datalist, written last: its presence means the dataset is complete.

    Raises:
        InputError: bad cases (see :func:`find_tumour_cases`, :func:`preprocess_case`), or every
            training mask empty after resampling.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise InputError(f"shape: expected three sizes >= 8, got {shape}")
    if not 0.0 <= validation_fraction < 1.0:
        raise InputError(f"validation_fraction: expected a value in [0, 1), got {validation_fraction}")
    cases = find_tumour_cases(source)
    output_dir = Path(output_dir)
    # built in a hidden partial folder and renamed into place: a failed run leaves an earlier
    # preparation whole, and a rerun holds no stale case of an earlier, larger source
    with atomic_folder(output_dir) as partial:
        _write_prepared(cases, source, partial, shape, validation_fraction)
    return output_dir / "datalist.json"


def _write_prepared(
    cases: Sequence[CaseFiles],
    source: str | os.PathLike,
    output_dir: Path,
    shape: tuple[int, ...],
    validation_fraction: float,
) -> Path:
    """The body of :func:`prepare_tumour_dataset`, writing into ``output_dir``."""
    items: list[dict[str, Any]] = []
    for case in tqdm(cases, desc="preprocess tumour cases", unit="case", disable=None):
        image, mask, affine = preprocess_case(case, shape)
        image_rel, label_rel = f"images/{case.case}.nii.gz", f"labels/{case.case}.nii.gz"
        save_volume(output_dir / image_rel, image, affine, dtype=np.float32)
        save_volume(output_dir / label_rel, mask, affine, dtype=np.uint8)
        items.append({"image": image_rel, "label": label_rel, "case": case.case, "subject": case.subject or case.case})
    n_validation = int(round(validation_fraction * len(items))) if len(items) > 1 else 0
    cut = len(items) - n_validation
    rows = measure_tumour_rows([output_dir / item["label"] for item in items])
    normaliser = fit_tumour_normaliser(rows[:cut])
    normalise_tumour_rows(rows, normaliser)
    for index, (item, row) in enumerate(zip(items, rows)):
        item["condition"] = [float(row[name]) for name in TUMOUR_FEATURE_NAMES]
        row["split"] = "training" if index < cut else "validation"
    normaliser.save(output_dir / "tumours_normaliser.json")
    write_csv(output_dir / "tumours.csv", rows, (*TUMOUR_COLUMNS, "split"))
    write_json(
        output_dir / "dataset.json",
        {
            "kind": "tumour pairs for slice_based_ldm_brats",
            "source": str(source),
            "shape": list(shape),
            "num_training": cut,
            "num_validation": n_validation,
            "image_range": [-1, 1],
            "label": "whole tumour (seg > 0)",
        },
    )
    return write_datalist(output_dir / "datalist.json", {"training": items[:cut], "validation": items[cut:]})
