"""Finding the image + label pairs of a dataset in the layouts researchers have.

A source is one of:

- ``brats``: a folder of case folders, each with a FLAIR (``*_flair.nii.gz`` of BraTS 2021,
  ``*-t2f.nii.gz`` of BraTS 2023) and a segmentation (``*_seg.nii.gz`` / ``*-seg.nii.gz``);
- ``freesurfer``: a ``SUBJECTS_DIR``: subject folders with ``mri/aseg.mgz`` and an intensity
  volume ``mri/T1.mgz`` (or ``mri/norm.mgz``); ``fsaverage*`` templates are not subjects;
- ``synthseg``: a folder of images, each beside SynthSeg's ``<name>_synthseg.nii.gz``;
- ``datalist``: a MONAI/Decathlon-style JSON (``{"training": [{"image", "label"}, ...]}``);
  paths relative to the file's folder;
- ``csv``: a table with ``image`` and ``label`` columns (optional ``case`` and ``subject``);
  paths relative to the file's folder.

Every case names its **subject**, the person it shows: a BraTS 2023 case ``BraTS-GLI-00012-001``
is timepoint 1 of subject ``BraTS-GLI-00012``; elsewhere the case is its own subject unless a
datalist or table says otherwise. Data ledgers count subjects, so two timepoints of one person
can never sit on both sides of a training / hold-out split.

Nothing is read here but names: :mod:`shared.datasets.reading` loads the volumes.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.io import VOLUME_SUFFIXES, InputError, item_subject, read_csv, read_datalist

LAYOUTS: tuple[str, ...] = ("brats", "freesurfer", "synthseg", "datalist", "csv")

#: File-name patterns (case-insensitive) of a BraTS case's FLAIR and segmentation.
BRATS_IMAGE_PATTERNS: tuple[str, ...] = ("*flair.nii.gz", "*flair.nii", "*t2f.nii.gz", "*t2f.nii")
BRATS_LABEL_PATTERNS: tuple[str, ...] = ("*seg.nii.gz", "*seg.nii")

#: BraTS 2023 case names: ``BraTS-<cohort>-<subject number>-<timepoint>``.
BRATS_2023_CASE = re.compile(r"^(BraTS-[A-Za-z]+-\d+)-\d+$")

#: FreeSurfer's label volume and the intensity volumes tried, in order, inside ``<subject>/mri``.
FREESURFER_LABEL = "aseg.mgz"
FREESURFER_IMAGES: tuple[str, ...] = ("T1.mgz", "norm.mgz")

#: Ending of SynthSeg's segmentation beside its input image.
SYNTHSEG_SUFFIX = "_synthseg"

#: What each folder layout holds, for messages.
LAYOUT_HINTS: dict[str, str] = {
    "brats": "one folder per case with a *_flair / *-t2f and a *_seg / *-seg NIfTI file",
    "freesurfer": f"subject folders with mri/{FREESURFER_LABEL} and mri/T1.mgz or norm.mgz",
    "synthseg": f"<name>.nii.gz beside <name>{SYNTHSEG_SUFFIX}.nii.gz",
    "datalist": "a JSON object of lists of {image, label} items",
    "csv": "a table with image and label columns",
}


@dataclass(frozen=True)
class CaseFiles:
    """One case: its name, image and label files, and the subject it shows (default: the case)."""

    case: str
    image: Path
    label: Path
    subject: str = ""

    def __post_init__(self) -> None:
        if not self.subject:
            object.__setattr__(self, "subject", self.case)


@dataclass(frozen=True)
class Discovery:
    """What :func:`find_cases` found: the layout, the usable cases, and what it left out and why."""

    source: Path
    layout: str
    cases: tuple[CaseFiles, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())


class _Problem(InputError):
    """A case that cannot be used; collected instead of raised when skipping is allowed."""


def _match_one(folder: Path, patterns: Sequence[str], what: str) -> Path:
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and _matches(p.name, patterns)]
    if not files:
        raise _Problem(f"{folder}: no {what} ({' or '.join(patterns)})")
    if len(files) > 1:
        raise _Problem(f"{folder}: several {what} files ({', '.join(p.name for p in files)})")
    return files[0]


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name.lower(), pattern) for pattern in patterns)


def _volume_stem(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _subfolders(source: Path) -> list[Path]:
    return [p for p in sorted(source.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def brats_subject(case: str) -> str:
    """The subject of a BraTS case name: the 2023 name without its timepoint, else the name itself."""
    match = BRATS_2023_CASE.match(case)
    return match.group(1) if match else case


def _brats_case(folder: Path) -> CaseFiles:
    image = _match_one(folder, BRATS_IMAGE_PATTERNS, "FLAIR")
    label = _match_one(folder, BRATS_LABEL_PATTERNS, "segmentation")
    return CaseFiles(folder.name, image, label, brats_subject(folder.name))


def _freesurfer_case(folder: Path) -> CaseFiles:
    mri = folder / "mri"
    label = mri / FREESURFER_LABEL
    if not label.is_file():
        raise _Problem(f"{label}: missing (a FreeSurfer subject holds mri/{FREESURFER_LABEL})")
    for name in FREESURFER_IMAGES:
        if (mri / name).is_file():
            return CaseFiles(folder.name, mri / name, label)
    raise _Problem(f"{mri}: no intensity volume ({' or '.join(FREESURFER_IMAGES)})")


def _synthseg_label_files(source: Path) -> list[Path]:
    return [
        p
        for p in sorted(source.iterdir())
        if p.is_file() and _volume_stem(p).endswith(SYNTHSEG_SUFFIX) and p.name.lower().endswith(VOLUME_SUFFIXES)
    ]


def _synthseg_case(label: Path) -> CaseFiles:
    stem = _volume_stem(label)[: -len(SYNTHSEG_SUFFIX)]
    images = [label.parent / f"{stem}{suffix}" for suffix in VOLUME_SUFFIXES]
    found = [p for p in images if p.is_file()]
    if not found:
        raise _Problem(f"{label}: no image beside it ({' or '.join(p.name for p in images)})")
    if len(found) > 1:
        raise _Problem(f"{label}: several images beside it ({', '.join(p.name for p in found)})")
    return CaseFiles(stem, found[0], label)


def _collect(
    candidates: Sequence[Any], make: Callable[[Any], CaseFiles], skip_bad: bool, name: Callable[[Any], str]
) -> tuple[list[CaseFiles], list[tuple[str, str]]]:
    """``make`` of every candidate; a failing one raises, or is listed as ``(name, reason)`` with ``skip_bad``."""
    cases: list[CaseFiles] = []
    skipped: list[tuple[str, str]] = []
    for candidate in candidates:
        try:
            cases.append(make(candidate))
        except _Problem as problem:
            if not skip_bad:
                raise InputError(str(problem)) from None
            skipped.append((name(candidate), str(problem)))
    return cases, skipped


def _datalist_cases(source: Path) -> list[CaseFiles]:
    cases = []
    for index, item in enumerate(read_datalist(source)):
        if not isinstance(item.get("image"), str) or not isinstance(item.get("label"), str):
            raise InputError(f"{source}: item {index} needs 'image' and 'label' file paths")
        case = str(item.get("case") or _volume_stem(Path(item["label"])))
        cases.append(CaseFiles(case, Path(item["image"]), Path(item["label"]), item_subject({**item, "case": case})))
    return cases


def _csv_cases(source: Path) -> list[CaseFiles]:
    rows = read_csv(source)
    columns = set(rows[0]) if rows else set()
    if not rows:
        raise InputError(f"{source}: table has no rows")
    missing = [name for name in ("image", "label") if name not in columns]
    if missing:
        raise InputError(f"{source}: table needs columns 'image' and 'label' (missing {', '.join(missing)})")
    cases = []
    for line, row in enumerate(rows, start=2):
        if not row["image"] or not row["label"]:
            raise InputError(f"{source}: line {line} has an empty image or label")
        image, label = (Path(row[key]) for key in ("image", "label"))
        image, label = (p if p.is_absolute() else (source.parent / p).resolve() for p in (image, label))
        case = row.get("case") or _volume_stem(label)
        cases.append(CaseFiles(case, image, label, row.get("subject") or case))
    return cases


def _existing(case: CaseFiles) -> CaseFiles:
    for path in (case.image, case.label):
        if not path.is_file():
            raise _Problem(f"{path}: no such file (case {case.case})")
    return case


def detect_layout(source: str | os.PathLike) -> str:
    """The layout of ``source`` (one of :data:`LAYOUTS`), from its file names only.

    Raises:
        InputError: no such source, no known layout, or signs of several layouts in one folder.
    """
    source = Path(source)
    if source.is_file():
        suffix = source.suffix.lower()
        if suffix == ".json":
            return "datalist"
        if suffix == ".csv":
            return "csv"
        raise InputError(f"{source}: a file source must be a datalist (.json) or a table (.csv)")
    if not source.is_dir():
        raise InputError(f"{source}: no such folder or file")
    found = []
    folders = _subfolders(source)
    if any((folder / "mri" / FREESURFER_LABEL).is_file() for folder in folders):
        found.append("freesurfer")
    if any(any(p.is_file() and _matches(p.name, BRATS_LABEL_PATTERNS) for p in folder.iterdir()) for folder in folders):
        found.append("brats")
    if _synthseg_label_files(source):
        found.append("synthseg")
    if not found:
        known = "; ".join(f"{name}: {LAYOUT_HINTS[name]}" for name in ("brats", "freesurfer", "synthseg"))
        raise InputError(f"{source}: no known layout ({known}; or a .json datalist or .csv table)")
    if len(found) > 1:
        raise InputError(f"{source}: looks like several layouts ({', '.join(found)}); name the layout")
    return found[0]


def find_cases(source: str | os.PathLike, layout: str = "auto", skip_bad: bool = False) -> Discovery:
    """The cases of ``source`` in ``layout`` (``"auto"``: :func:`detect_layout`).

    Args:
        source: folder, datalist or table (see the module docstring).
        layout: one of :data:`LAYOUTS`, or ``"auto"``.
        skip_bad: leave out a case folder that lacks a file (listed in ``Discovery.skipped``)
            instead of failing; so too a case whose named file does not exist.

    Raises:
        InputError: unknown layout, no case, a case without its files (unless skipped), two cases
            of one name.
    """
    source = Path(source)
    if layout == "auto":
        layout = detect_layout(source)
    elif layout not in LAYOUTS:
        raise InputError(f"layout: expected one of {', '.join(LAYOUTS)} or auto, got {layout!r}")
    elif not source.exists():
        raise InputError(f"{source}: no such folder or file")
    skipped: list[tuple[str, str]] = []
    if layout == "datalist":
        cases = _datalist_cases(source)
    elif layout == "csv":
        cases = _csv_cases(source)
    elif not source.is_dir():
        raise InputError(f"{source}: the {layout} layout is a folder")
    elif layout == "brats":
        cases, skipped = _collect(_subfolders(source), _brats_case, skip_bad, name=lambda path: path.name)
    elif layout == "freesurfer":
        subjects = [p for p in _subfolders(source) if not p.name.startswith("fsaverage")]
        cases, skipped = _collect(subjects, _freesurfer_case, skip_bad, name=lambda path: path.name)
    else:
        cases, skipped = _collect(_synthseg_label_files(source), _synthseg_case, skip_bad, name=lambda path: path.name)
    cases, unreadable = _collect(cases, _existing, skip_bad, name=lambda case: case.case)
    skipped += unreadable
    if not cases:
        raise InputError(f"{source}: no usable case in the {layout} layout ({LAYOUT_HINTS[layout]})")
    first: dict[str, CaseFiles] = {}
    for case in cases:
        if case.case in first:
            raise InputError(f"{case.label}: case name '{case.case}' is also that of {first[case.case].label}")
        first[case.case] = case
    return Discovery(source, layout, tuple(cases), tuple(skipped))
