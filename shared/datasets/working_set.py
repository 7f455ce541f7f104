"""A researcher's dataset, in any layout, written onto the working grid as the project's datalist form.

:func:`write_working_set` finds the cases (:mod:`shared.datasets.layouts`), reads each onto the
working grid with its label rule (:mod:`shared.datasets.reading`), and writes::

    <output_dir>/images/<case>.nii.gz    float32 image on the working grid (RAS affine)
    <output_dir>/labels/<case>.nii.gz    label map (brains: the 33 SynthSeg ids) or whole-tumour mask 0/1
    <output_dir>/datalist.json           {"training": [...], "validation": [...]}, items with case and subject
    <output_dir>/dataset.json            source, layout, grid, subjects, and the cases left out and why

The validation section is the last ``validation_fraction`` of the **subjects**: every case of a
subject (BraTS 2023 timepoints) sits on one side. The folder is built whole and renamed into
place; a failing case stops the run with nothing written, unless ``skip_bad`` leaves it out
and lists it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from shared.bounds import Fraction, Positive, PositiveFloat
from shared.datasets.label_rules import BRATS_TUMOUR_IDS, AnatomyLabels, WholeTumour
from shared.datasets.layouts import find_cases
from shared.datasets.reading import CaseArrays, WorkingGrid, read_case
from shared.io import InputError, atomic_folder, save_volume, write_datalist, write_json


def subject_split(subjects: Sequence[str], validation_fraction: float) -> tuple[list[str], list[str]]:
    """``(training, validation)`` subjects in first-seen order: the last fraction of distinct subjects validates."""
    distinct = list(dict.fromkeys(subjects))
    n_validation = min(int(round(len(distinct) * float(validation_fraction))), len(distinct) - 1)
    cut = len(distinct) - n_validation
    return distinct[:cut], distinct[cut:]


def write_working_set(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    kind: Literal["brains", "tumours"],
    shape: tuple[Positive, Positive, Positive],
    spacing: tuple[PositiveFloat, PositiveFloat, PositiveFloat],
    layout: Literal["auto", "brats", "freesurfer", "synthseg", "datalist", "csv"] = "auto",
    tumour_ids: tuple[Positive, ...] = BRATS_TUMOUR_IDS,
    validation_fraction: Fraction = 0.2,
    skip_bad: bool = False,
) -> Path:
    """Write ``source`` onto the working grid in ``output_dir``; returns the datalist (see the module docstring).

    Args:
        source: a folder (BraTS, FreeSurfer, SynthSeg layout), a datalist ``.json`` or a ``.csv`` table.
        output_dir: the folder to write (replaced whole once every case is written).
        kind: ``brains`` (label maps onto SynthSeg's 33 classes, centred on the labelled head) or
            ``tumours`` (sub-regions merged into one whole-tumour mask, centred on the non-zero image).
        shape: working grid ``X,Y,Z`` in voxels (each at least 8).
        spacing: working voxel size ``X,Y,Z`` in mm.
        layout: the source's layout, or ``auto`` to detect it from file names.
        tumour_ids: tumours: the segmentation's tumour ids (BraTS 2021: 1,2,4; 2023: 1,2,3).
        validation_fraction: share of subjects (the last ones) listed under ``validation``.
        skip_bad: leave out cases that cannot be found or read (listed in ``dataset.json``) instead of stopping.

    Raises:
        InputError: a bad source, grid or case (unless skipped), or no case left.
    """
    if kind not in ("brains", "tumours"):
        raise InputError(f"kind: expected brains or tumours, got {kind!r}")
    if not 0 <= float(validation_fraction) < 1:
        raise InputError(f"validation fraction: expected a number in [0, 1), got {validation_fraction!r}")
    grid = WorkingGrid(tuple(shape), tuple(spacing))  # type: ignore[arg-type]
    rule = AnatomyLabels() if kind == "brains" else WholeTumour(tuple(tumour_ids))
    foreground = "label" if kind == "brains" else "image"
    found = find_cases(source, layout, skip_bad=skip_bad)
    skipped = [{"case": case, "reason": reason} for case, reason in found.skipped]
    read: list[CaseArrays] = []
    for case in tqdm(found.cases, desc=f"read {kind} onto {grid.shape}", unit="case", disable=None):
        try:
            read.append(read_case(case, grid, rule, foreground))
        except InputError as error:
            if not skip_bad:
                raise
            skipped.append({"case": case.case, "reason": str(error)})
    if not read:
        raise InputError(f"{source}: no case could be read onto the working grid")
    training, validation = subject_split([arrays.case.subject for arrays in read], validation_fraction)
    sections: dict[str, list[dict[str, str]]] = {"training": [], "validation": []}
    with atomic_folder(output_dir) as partial:
        for arrays in read:
            case = arrays.case
            image_rel, label_rel = f"images/{case.case}.nii.gz", f"labels/{case.case}.nii.gz"
            save_volume(partial / image_rel, arrays.image, arrays.affine, dtype=np.float32)
            save_volume(partial / label_rel, arrays.label, arrays.affine, dtype=arrays.label.dtype)
            section = "training" if case.subject in training else "validation"
            sections[section].append(
                {"image": image_rel, "label": label_rel, "case": case.case, "subject": case.subject}
            )
        write_json(
            partial / "dataset.json",
            {
                "kind": kind,
                "source": str(source),
                "layout": found.layout,
                "shape": list(grid.shape),
                "spacing_mm": list(grid.spacing),
                "subjects": {"training": training, "validation": validation},
                "skipped": skipped,
            },
        )
        write_datalist(partial / "datalist.json", sections)
    return Path(output_dir) / "datalist.json"
