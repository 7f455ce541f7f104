"""Demo datasets as recipes: what to draw, which subjects that gives, and how to write it.

A :class:`DemoRecipe` names a built-in demo dataset completely (kind, cases, grid, seed, the
ventricle-enlargement or tumour-radius range, the validation split, and for tumours the slice
LDM's preparation). Its subjects follow from it without drawing a voxel
(:meth:`DemoRecipe.subjects`), which is how a study's design lists what every model will see
before anything runs; :meth:`DemoRecipe.write` draws the dataset. Starter-weight manifests hold
the recipes of the data their generators learnt from (``ledger``), so the pipeline can write that
data again (byte-identical) for the ``pool`` control.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.demo.dataset import subject_id, write_brain_dataset, write_tumour_dataset
from shared.io import InputError, items_relative_to, read_datalist, write_datalist

KINDS = ("brains", "tumours")


@dataclass(frozen=True)
class DemoRecipe:
    """One built-in demo dataset.

    Attributes:
        kind: ``brains`` (label maps + FLAIR-like images) or ``tumours`` (FLAIR + whole-tumour mask).
        n_cases: number of cases (one subject each).
        shape: grid ``X, Y, Z`` of the drawn cases.
        seed: dataset seed; subjects are ``(kind, seed, index)``.
        validation_fraction: the last cases go to the datalist's ``validation`` section.
        spacing: voxel size (mm; ``None``: a 192 mm field of view).
        low, high: range of the ventricle enlargement (brains; volume factor, log-uniform) or of
            the tumour's mean radius (tumours; mm, uniform).
        first_index: index of the first case (other subjects of the same seed).
        prepared_shape: tumours only: the slice LDM's working grid the cases are prepared to
            (``None``: not prepared).
        prepared_validation_fraction: the validation split of the prepared set.
    """

    kind: str
    n_cases: int
    shape: tuple[int, int, int]
    seed: int
    validation_fraction: float = 0.2
    spacing: tuple[float, float, float] | float | None = None
    low: float | None = None
    high: float | None = None
    first_index: int = 0
    prepared_shape: tuple[int, int, int] | None = None
    prepared_validation_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"demo recipe kind '{self.kind}': expected one of {', '.join(KINDS)}")
        if isinstance(self.n_cases, bool) or not isinstance(self.n_cases, int) or self.n_cases < 1:
            raise InputError(f"demo {self.kind}: number of cases must be an integer >= 1, got {self.n_cases!r}")
        if self.prepared_shape is not None and self.kind != "tumours":
            raise InputError("demo recipe: only tumour cases are prepared to a working grid")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DemoRecipe:
        """The recipe of :meth:`params` (e.g. read from a starter manifest's ledger)."""
        fields = {**params}
        for key in ("shape", "prepared_shape"):
            if fields.get(key) is not None:
                fields[key] = tuple(int(n) for n in fields[key])
        if isinstance(fields.get("spacing"), list):
            fields["spacing"] = tuple(float(s) for s in fields["spacing"])
        try:
            return cls(**fields)
        except TypeError as error:
            raise InputError(f"demo recipe {dict(params)}: {error}") from error

    def params(self) -> dict[str, Any]:
        """JSON-friendly fields (stage parameters, manifests)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def prefix(self) -> str:
        return "brain" if self.kind == "brains" else "tumour"

    def subjects(self) -> dict[str, list[str]]:
        """``{"training": [...], "validation": [...]}`` subject ids, as the written datalist will hold them.

        The split rounds as the writers do: the demo writers keep at least one training case; the
        preparation re-splits the cases in their order (by index) with its own fraction.
        """
        n = self.n_cases
        ids = [subject_id(self.prefix, self.seed, self.first_index + i) for i in range(n)]
        if self.prepared_shape is None:
            n_validation = min(int(round(n * float(self.validation_fraction))), n - 1)
        else:
            n_validation = int(round(float(self.prepared_validation_fraction) * n)) if n > 1 else 0
        cut = n - n_validation
        return {"training": ids[:cut], "validation": ids[cut:]}

    def all_subjects(self) -> list[str]:
        split = self.subjects()
        return split["training"] + split["validation"]

    def write(self, folder: str | Path) -> Path:
        """Draw the dataset into ``folder``; returns its datalist (prepared tumours: raw cases in ``folder/raw``)."""
        folder = Path(folder)
        if self.kind == "brains":
            enlargement = (self.low, self.high) if self.low is not None else None
            extra = {"enlargement_range": enlargement} if enlargement else {}
            return write_brain_dataset(
                folder, self.n_cases, self.shape, self.spacing, self.seed,
                validation_fraction=self.validation_fraction, first_index=self.first_index, **extra,
            )  # fmt: skip
        radius = {"radius_range_mm": (self.low, self.high)} if self.low is not None else {}
        if self.prepared_shape is None:
            return write_tumour_dataset(
                folder, self.n_cases, self.shape, self.spacing, self.seed,
                validation_fraction=self.validation_fraction, first_index=self.first_index, **radius,
            )  # fmt: skip
        from shared.tumour_preprocessing import prepare_tumour_dataset

        raw = write_tumour_dataset(
            folder / "raw", self.n_cases, self.shape, self.spacing, self.seed,
            validation_fraction=self.validation_fraction, first_index=self.first_index, **radius,
        )  # fmt: skip
        return prepare_tumour_dataset(raw, folder, self.prepared_shape, self.prepared_validation_fraction)


def write_parts(parts: Sequence[DemoRecipe], folder: str | Path) -> Path:
    """Several recipes (e.g. a hold-out of two ranges) as one dataset: ``part_<k>/`` and one datalist.

    One part is written straight into ``folder``. The combined datalist lists every part's
    cases, all in its ``training`` section (a hold-out has no split).
    """
    folder = Path(folder)
    if len(parts) == 1:
        return parts[0].write(folder)
    items: list[dict[str, Any]] = []
    for k, part in enumerate(parts):
        items += read_datalist(part.write(folder / f"part_{k}"))
    subjects = [item["subject"] for item in items]
    if len(set(subjects)) != len(subjects):
        raise InputError(f"{folder}: the parts share subjects; give them distinct first_index values")
    return write_datalist(folder / "datalist.json", {"training": items_relative_to(items, folder)})


def parts_subjects(parts: Sequence[DemoRecipe]) -> list[str]:
    """Every subject of several recipes."""
    return [subject for part in parts for subject in part.all_subjects()]
