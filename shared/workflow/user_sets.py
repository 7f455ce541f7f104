"""A researcher's own labelled set as a study's data source: subjects known before any voxel is read.

A :class:`UserSet` names one set of cases in any layout :mod:`shared.datasets.layouts` knows
(BraTS, FreeSurfer, SynthSeg, datalist, CSV) and the working grid it is brought to. It offers what
a :class:`shared.workflow.demo_recipes.DemoRecipe` offers, so a study treats the two alike:
:meth:`UserSet.subjects` (from the file names alone; the design's ledgers and the hold-out check
use it before anything trains), :meth:`UserSet.params` (a stage's key: the settings plus the size
and time of every file, so an edited dataset is read again), :meth:`UserSet.write_raw` (the cases
on the working grid, :func:`shared.datasets.working_set.write_working_set`) and
:meth:`UserSet.write` (tumour cases also prepared for the slice LDM: image in [-1, 1], condition
table and normaliser, as the demo's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from shared.datasets.label_rules import BRATS_TUMOUR_IDS
from shared.datasets.layouts import Discovery, find_cases
from shared.datasets.reading import WorkingGrid
from shared.datasets.working_set import subject_split, write_working_set
from shared.io import InputError

KINDS = ("brains", "tumours")


@dataclass(frozen=True)
class UserSet:
    """One labelled set of the user's, on a working grid.

    Attributes:
        kind: ``brains`` (label maps in the aseg/SynthSeg id space) or ``tumours`` (image + tumour
            segmentation).
        source: a folder (BraTS, FreeSurfer, SynthSeg layout), a datalist ``.json`` or a ``.csv``.
        shape: working grid ``X, Y, Z`` (voxels).
        spacing: working voxel size ``X, Y, Z`` (mm).
        layout: the source's layout, or ``auto``.
        tumour_ids: tumours: the segmentation ids that make up the whole tumour.
        validation_fraction: share of subjects (the last ones) in the ``validation`` section.
        skip_bad: leave out cases that cannot be read (listed in the set's ``dataset.json``).
        prepared_shape: tumours: the slice LDM's working grid the cases are prepared to (``None``:
            only brought onto the working grid).
        prepared_validation_fraction: the validation split of the prepared set.
    """

    kind: str
    source: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    layout: str = "auto"
    tumour_ids: tuple[int, ...] = BRATS_TUMOUR_IDS
    validation_fraction: float = 0.2
    skip_bad: bool = False
    prepared_shape: tuple[int, int, int] | None = None
    prepared_validation_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"data kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        grid = WorkingGrid(tuple(self.shape), tuple(self.spacing))  # type: ignore[arg-type]
        object.__setattr__(self, "shape", grid.shape)
        object.__setattr__(self, "spacing", grid.spacing)
        object.__setattr__(self, "source", str(Path(self.source).expanduser().resolve()))
        object.__setattr__(self, "tumour_ids", tuple(int(v) for v in self.tumour_ids))
        if self.prepared_shape is not None:
            if self.kind != "tumours":
                raise InputError(f"{self.source}: only tumour cases are prepared to a working grid")
            object.__setattr__(self, "prepared_shape", tuple(int(n) for n in self.prepared_shape))

    @cached_property
    def discovery(self) -> Discovery:
        """The cases found in :attr:`source` (file names only; raises :class:`InputError` on a bad source)."""
        found = find_cases(self.source, self.layout, skip_bad=self.skip_bad)
        if not found.cases:
            raise InputError(f"{self.source}: no case found")
        return found

    @property
    def n_cases(self) -> int:
        return len(self.discovery.cases)

    #: A user set has no range of its own (demo recipes have one); the report prints none.
    low = None
    high = None

    def subjects(self) -> dict[str, list[str]]:
        """``{"training": [...], "validation": [...]}`` subject ids, as the written datalist holds them.

        A prepared tumour set re-splits its cases in order with ``prepared_validation_fraction``,
        as the preparation does.
        """
        subjects = [case.subject for case in self.discovery.cases]
        if self.prepared_shape is None:
            training, validation = subject_split(subjects, self.validation_fraction)
            return {"training": training, "validation": validation}
        n = len(subjects)
        n_validation = int(round(float(self.prepared_validation_fraction) * n)) if n > 1 else 0
        cut = n - n_validation
        return {
            "training": list(dict.fromkeys(subjects[:cut])),
            "validation": [s for s in dict.fromkeys(subjects[cut:]) if s not in set(subjects[:cut])],
        }

    def all_subjects(self) -> list[str]:
        split = self.subjects()
        return split["training"] + split["validation"]

    def files(self) -> list[Path]:
        """Every image and label file of the set."""
        return [path for case in self.discovery.cases for path in (case.image, case.label)]

    def fingerprint(self) -> str:
        """sha256 over each file's path, size and modification time (an edited set is read again)."""
        digest = hashlib.sha256()
        for path in self.files():
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def params(self) -> dict[str, Any]:
        """JSON-friendly settings and the files' fingerprint (stage keys, the resolved study file)."""
        return {
            "kind": self.kind, "source": self.source, "layout": self.layout, "shape": list(self.shape),
            "spacing": list(self.spacing), "tumour_ids": list(self.tumour_ids),
            "validation_fraction": self.validation_fraction, "skip_bad": self.skip_bad,
            "prepared_shape": list(self.prepared_shape) if self.prepared_shape else None,
            "prepared_validation_fraction": self.prepared_validation_fraction,
            "files_sha256": self.fingerprint(),
        }  # fmt: skip

    def write_raw(self, folder: str | Path) -> Path:
        """The cases on the working grid in ``folder`` (images, labels, datalist); returns the datalist."""
        return write_working_set(
            self.source, folder, self.kind, self.shape, self.spacing, self.layout,  # type: ignore[arg-type]
            tumour_ids=self.tumour_ids, validation_fraction=self.validation_fraction, skip_bad=self.skip_bad,
        )  # fmt: skip

    def write(self, folder: str | Path) -> Path:
        """:meth:`write_raw`, then for a prepared tumour set the slice LDM's preparation; returns the datalist."""
        folder = Path(folder)
        if self.prepared_shape is None:
            return self.write_raw(folder)
        from shared.tumour_preprocessing import prepare_tumour_dataset

        raw = self.write_raw(folder.parent / f"{folder.name}_on_grid")
        return prepare_tumour_dataset(raw, folder, self.prepared_shape, self.prepared_validation_fraction)
