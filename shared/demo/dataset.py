"""Writing the demo datasets to disk: NIfTI pairs, a MONAI datalist, a description and a mosaic.

Layout of a brain dataset (tumour datasets alike, with ``tumour_XXX`` cases and binary
masks as labels)::

    <output_dir>/images/brain_000.nii.gz   FLAIR-like image, float32
    <output_dir>/labels/brain_000.nii.gz   label map, FreeSurfer/SynthSeg ids, int16
    <output_dir>/datalist.json             {"training": [...], "validation": [...]}
    <output_dir>/dataset.json              generation parameters, label set, subjects
    <output_dir>/mosaic.png                a few cases with label outlines

Every item names its **subject** (:func:`subject_id`): the anatomy drawn from the dataset's
seed and the case index. The same subject drawn with another ventricle enlargement (or on
another grid) is the same subject with another case file; data ledgers count subjects, so a
hold-out of other seeds is a set of subjects no model saw.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from shared.bounds import Count, Fraction, Positive, PositiveFloat
from shared.demo.anatomy import (
    APPEARANCE_PART,
    DEFAULT_ENLARGEMENT_RANGE,
    generate_label_map,
    subject_rng,
)
from shared.demo.flair import draw_rendering, render_flair
from shared.demo.grid import Grid, make_grid
from shared.demo.tumour import DEFAULT_RADIUS_RANGE_MM, check_radius_range, generate_tumour_case
from shared.io import InputError, save_volume, write_datalist, write_json
from shared.labels import SYNTHSEG_CLASSES
from shared.viz import MosaicCase, save_label_mosaic

BRAIN_STREAM = 0


def subject_id(kind: str, seed: int, index: int) -> str:
    """``demo-<kind>-s<seed>-<index>``: one demo subject (``kind`` ``brain`` or ``tumour``).

    The anatomy of a demo case is a function of ``(kind, seed, index)`` only: the ventricle
    enlargement range, the grid and the spacing change the case's files, not its subject.
    """
    return f"demo-{kind}-s{int(seed)}-{int(index):03d}"


#: Number of cases shown in a dataset's mosaic.
MOSAIC_CASES = 4

#: Label set of the tumour masks.
TUMOUR_MASK_LABELS: dict[int, str] = {0: "background", 1: "whole-tumour"}


def _check_first_index(first_index: int) -> None:
    if isinstance(first_index, bool) or not isinstance(first_index, (int, np.integer)) or first_index < 0:
        raise InputError(f"first index: expected an integer >= 0, got {first_index!r}")


def _check_counts(n_cases: int, validation_fraction: float) -> int:
    if not isinstance(n_cases, int) or isinstance(n_cases, bool) or n_cases < 1:
        raise InputError(f"number of cases: expected a positive integer, got {n_cases!r}")
    if not 0 <= float(validation_fraction) < 1:
        raise InputError(f"validation fraction: expected a number in [0, 1), got {validation_fraction!r}")
    n_validation = int(round(n_cases * float(validation_fraction)))
    return min(n_validation, n_cases - 1)


def _write_dataset(
    output_dir: Path,
    prefix: str,
    n_cases: int,
    n_validation: int,
    grid: Grid,
    make_case: Callable[[int], tuple[np.ndarray, np.ndarray, dict[str, Any]]],
    label_dtype: Any,
    description: dict[str, Any],
    mosaic_focus: str,
    first_index: int = 0,
) -> Path:
    """Generate and save ``n_cases`` pairs, then ``dataset.json``, ``mosaic.png`` and the datalist.

    Args:
        output_dir: dataset folder.
        prefix: case name prefix (``brain`` -> ``brain_000``).
        n_cases: number of cases; the last ``n_validation`` go to the ``validation`` section.
        n_validation: how many of them.
        grid: the cases' grid.
        make_case: ``index -> (image, labels, per-case values for the datalist)``.
        label_dtype: on-disk dtype of the labels.
        description: dataset-specific entries of ``dataset.json`` (kind, parameters, label set).
        mosaic_focus: where the mosaic's slices cross (see :func:`shared.viz.save_label_mosaic`).
        first_index: index of the first case (subjects ``first_index`` ... ``first_index + n_cases - 1``).

    Returns:
        The datalist path, written last so that its presence means the dataset is complete.
    """
    # The datalist marks a complete dataset: remove it (and cases of an earlier, larger run) first.
    (output_dir / "datalist.json").unlink(missing_ok=True)
    for folder in ("images", "labels"):
        for stale in (output_dir / folder).glob(f"{prefix}_*.nii.gz"):
            stale.unlink()
    items: list[dict[str, Any]] = []
    mosaic: list[MosaicCase] = []
    indices = range(int(first_index), int(first_index) + n_cases)
    for index in tqdm(indices, desc=f"demo {prefix}s", unit="case", disable=None):
        image, labels, values = make_case(index)
        case = f"{prefix}_{index:03d}"
        image_rel, label_rel = f"images/{case}.nii.gz", f"labels/{case}.nii.gz"
        save_volume(output_dir / image_rel, image, grid.affine, dtype=np.float32)
        save_volume(output_dir / label_rel, labels, grid.affine, dtype=label_dtype)
        subject = subject_id(prefix, description["seed"], index)
        items.append({"image": image_rel, "label": label_rel, "case": case, "subject": subject, **values})
        if len(mosaic) < MOSAIC_CASES:
            title = f"{case} " + " ".join(f"{k}={v:.3g}" for k, v in values.items() if isinstance(v, float))
            mosaic.append(MosaicCase(image=image, labels=labels, spacing=grid.spacing, title=title))
    cut = n_cases - n_validation
    sections = {"training": items[:cut], "validation": items[cut:]}
    write_json(
        output_dir / "dataset.json",
        {
            **description,
            "shape": list(grid.shape),
            "spacing_mm": list(grid.spacing),
            "num_training": cut,
            "num_validation": n_validation,
            "subjects": [item["subject"] for item in items],
        },
    )
    save_label_mosaic(output_dir / "mosaic.png", mosaic, focus=mosaic_focus)
    return write_datalist(output_dir / "datalist.json", sections)


def write_brain_dataset(
    output_dir: str | os.PathLike,
    n_cases: Count = 20,
    shape: Sequence[Positive] = (64, 64, 64),
    spacing: Sequence[PositiveFloat] | PositiveFloat | None = None,
    seed: Count = 0,
    enlargement_range: Sequence[PositiveFloat] = DEFAULT_ENLARGEMENT_RANGE,
    validation_fraction: Fraction = 0.2,
    first_index: Count = 0,
) -> Path:
    """Write ``n_cases`` brain label maps with FLAIR-like images; returns the datalist path.

    Args:
        output_dir: folder to write into (created).
        n_cases: number of subjects.
        shape: grid in voxels.
        spacing: voxel size in mm (``None``: 192 mm field of view).
        seed: dataset seed; the same seed gives byte-identical arrays.
        enlargement_range: range of the ventricle enlargement (volume factor), log-uniform.
        validation_fraction: share of cases (the last ones) listed under ``validation``.
        first_index: subject index of the first case (a dataset of other subjects of the same seed).
    """
    output_dir = Path(output_dir)
    n_validation = _check_counts(n_cases, validation_fraction)
    _check_first_index(first_index)
    grid = make_grid(shape, spacing)
    try:
        low, high = (float(v) for v in enlargement_range)
    except (TypeError, ValueError) as error:
        raise InputError(f"enlargement range: expected two numbers, got {enlargement_range!r}") from error
    if not 0 < low <= high:
        raise InputError(f"enlargement range: expected 0 < low <= high, got {tuple(enlargement_range)!r}")

    def make_case(index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        labels, draws = generate_label_map(grid, seed, index, enlargement_range=(low, high), stream=BRAIN_STREAM)
        image = render_flair(labels, grid, draw_rendering(subject_rng(seed, BRAIN_STREAM, index, APPEARANCE_PART)))
        return image, labels, {"enlargement": round(draws.enlargement, 6)}

    description = {
        "description": "Procedural brain label maps (FreeSurfer/SynthSeg ids) with FLAIR-like images",
        "kind": "brains",
        "seed": seed,
        "enlargement_range": [low, high],
        "labels": {str(k): v for k, v in SYNTHSEG_CLASSES.items()},
    }
    return _write_dataset(
        output_dir, "brain", n_cases, n_validation, grid, make_case, np.int16, description, "ventricles", first_index
    )


def write_tumour_dataset(
    output_dir: str | os.PathLike,
    n_cases: Count = 20,
    shape: Sequence[Positive] = (64, 64, 64),
    spacing: Sequence[PositiveFloat] | PositiveFloat | None = None,
    seed: Count = 0,
    radius_range_mm: Sequence[PositiveFloat] = DEFAULT_RADIUS_RANGE_MM,
    centre_fraction: Sequence[Fraction] | None = None,
    validation_fraction: Fraction = 0.2,
    first_index: Count = 0,
) -> Path:
    """Write ``n_cases`` tumour cases (FLAIR-like image + binary whole-tumour mask); returns the datalist path.

    Args:
        output_dir: folder to write into (created).
        n_cases: number of cases.
        shape: grid in voxels.
        spacing: voxel size in mm (``None``: 192 mm field of view).
        seed: dataset seed.
        radius_range_mm: the tumour's mean radius is uniform in this range.
        centre_fraction: fixed tumour centre as grid fractions ``(x, y, z)`` in [0, 1]; must
            fall in cerebral white matter. ``None`` draws one per case.
        validation_fraction: share of cases (the last ones) listed under ``validation``.
        first_index: subject index of the first case.
    """
    output_dir = Path(output_dir)
    n_validation = _check_counts(n_cases, validation_fraction)
    _check_first_index(first_index)
    grid = make_grid(shape, spacing)
    radius_range_mm = check_radius_range(radius_range_mm)

    def make_case(index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        case = generate_tumour_case(grid, seed, index, radius_range_mm, centre_fraction)
        return case.image, case.mask, {"radius_mm": round(case.radius_mm, 4), "tumour_voxels": int(case.mask.sum())}

    description = {
        "description": "FLAIR-like brains with a hyperintense whole tumour (core + oedema) and its binary mask",
        "kind": "tumours",
        "seed": seed,
        "radius_range_mm": [float(v) for v in radius_range_mm],
        "centre_fraction": None if centre_fraction is None else [float(v) for v in centre_fraction],
        "labels": {str(k): v for k, v in TUMOUR_MASK_LABELS.items()},
    }
    return _write_dataset(
        output_dir, "tumour", n_cases, n_validation, grid, make_case, np.uint8, description, "labels", first_index
    )
