"""Data ledgers: which subjects every trained model learnt from.

Every generator stage (autoencoders included) and every nnU-Net model of a study gets a
:class:`Ledger`: the subjects it was trained on, those it was validated on (seen, not learnt
from), how many generated pairs it learnt from and which generators made them (``via``), and
the range of the study's conditioning quantity over its real training subjects (ventricle mL or
tumour mL). A subject is an anatomy, not a file: the same demo brain drawn with other ventricles
is the same subject (:func:`shared.demo.dataset.subject_id`); for other data it is the
datalist item's ``subject`` field, or its case name.

The hold-out of a study is a set of subjects that appears in no ledger; :func:`check_unseen`
stops a study before any segmenter trains when one does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.io import InputError, item_subject, load_label_map, read_datalist, read_json, voxel_volume_mm3, write_json
from shared.labels import VENTRICLE_LABEL_IDS

#: The conditioning quantity each study's ledger ranges over.
QUANTITIES: dict[str, str] = {"ventricles": "ventricle_ml", "tumours": "tumour_ml"}

LEDGER_FILE = "ledger.json"


@dataclass(frozen=True)
class Ledger:
    """What one trained model learnt from.

    Attributes:
        model: its name, e.g. ``mask LDM autoencoder`` or ``nnU-Net augmented (seed 1)``.
        study: ``ventricles`` or ``tumours``.
        training: subject ids it learnt from (sorted).
        validation: subject ids it was validated on (sorted).
        synthetic_pairs: generated pairs it learnt from (no subject of their own).
        via: the generator models whose pairs those are (their own ledgers list their subjects).
        value_range: ``(min, max)`` of the study's quantity (:data:`QUANTITIES`) over the training
            subjects' label maps; ``None`` without real training subjects.
        source: where the data came from, in words (a datalist, starter weights, a recipe).
    """

    model: str
    study: str
    training: tuple[str, ...]
    validation: tuple[str, ...] = ()
    synthetic_pairs: int = 0
    via: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.study not in QUANTITIES:
            raise InputError(f"ledger of {self.model}: unknown study '{self.study}'")
        object.__setattr__(self, "training", tuple(sorted(set(self.training))))
        object.__setattr__(self, "validation", tuple(sorted(set(self.validation))))

    @property
    def quantity(self) -> str:
        return QUANTITIES[self.study]

    def seen(self) -> set[str]:
        """Every subject the model saw: trained or validated on."""
        return set(self.training) | set(self.validation)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["quantity"] = self.quantity
        data["count"] = len(self.training)
        data["value_range"] = list(self.value_range) if self.value_range is not None else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ledger:
        value_range = data.get("value_range")
        return cls(
            model=str(data["model"]), study=str(data["study"]), training=tuple(data.get("training", ())),
            validation=tuple(data.get("validation", ())), synthetic_pairs=int(data.get("synthetic_pairs", 0)),
            via=tuple(data.get("via", ())), value_range=None if value_range is None else tuple(value_range),
            source=str(data.get("source", "")),
        )  # fmt: skip


def write_ledger(path: str | Path, ledger: Ledger) -> Path:
    """``ledger.json`` (``path`` a folder) or the named file."""
    path = Path(path)
    return write_json(path / LEDGER_FILE if path.suffix != ".json" else path, ledger.to_json())


def read_ledger(path: str | Path) -> Ledger:
    path = Path(path)
    return Ledger.from_json(read_json(path / LEDGER_FILE if path.is_dir() else path))


def quantity_ml(label_file: str | Path, study: str) -> float:
    """The study's quantity of one label map: ventricle volume (FreeSurfer ventricle ids, or a binary
    ventricle mask) or whole-tumour volume (every label > 0), in mL."""
    volume = load_label_map(label_file)
    array = volume.array
    if study == "ventricles" and array.max() > 1:
        count = int(np.isin(array, VENTRICLE_LABEL_IDS).sum())
    else:
        count = int((array > 0).sum())
    return count * voxel_volume_mm3(volume.affine) / 1000.0


def value_range(label_files: Iterable[str | Path], study: str) -> tuple[float, float] | None:
    values = [quantity_ml(path, study) for path in label_files]
    return (round(min(values), 3), round(max(values), 3)) if values else None


def datalist_ledger(
    model: str,
    study: str,
    datalist: str | Path,
    training_sections: Sequence[str] = ("training",),
    validation_sections: Sequence[str] = ("validation",),
    source: str | None = None,
) -> Ledger:
    """The ledger of a model trained on the ``training_sections`` of a datalist (validated on the others)."""
    training = read_datalist(datalist, training_sections)
    content = read_json(datalist)
    validation = [item for name in validation_sections if content.get(name) for item in read_datalist(datalist, [name])]
    return Ledger(
        model=model, study=study, training=tuple(item_subject(i) for i in training),
        validation=tuple(item_subject(i) for i in validation),
        value_range=value_range([item["label"] for item in training], study),
        source=source or str(datalist),
    )  # fmt: skip


def check_unseen(holdout_subjects: Iterable[str], ledgers: Iterable[Ledger], where: str = "hold-out") -> None:
    """Stop when a hold-out subject is in a ledger (trained or validated on).

    Raises:
        InputError: ``<where>: subject <id> was seen by <model>``.
    """
    holdout = set(holdout_subjects)
    for ledger in ledgers:
        overlap = sorted(holdout & ledger.seen())
        if overlap:
            raise InputError(
                f"{where}: subject {overlap[0]} was seen by {ledger.model}"
                + (f" (and {len(overlap) - 1} more)" if len(overlap) > 1 else "")
            )


def compress_ids(ids: Sequence[str], limit: int = 4) -> str:
    """``demo-brain-s0-000 … 085`` for runs of consecutive numbered ids; others listed (shortened)."""
    runs: list[list[Any]] = []  # [prefix, first, last, width]
    loose: list[str] = []
    for subject in sorted(ids):
        match = re.fullmatch(r"(.*?)(\d+)", subject)
        if not match:
            loose.append(subject)
            continue
        prefix, digits = match.group(1), match.group(2)
        number = int(digits)
        if runs and runs[-1][0] == prefix and runs[-1][2] == number - 1:
            runs[-1][2] = number
        else:
            runs.append([prefix, number, number, len(digits)])
    parts = [
        f"{p}{a:0{w}d}" if a == b else f"{p}{a:0{w}d} … {b:0{w}d}"
        for p, a, b, w in sorted(runs, key=lambda r: (r[0], r[1]))
    ] + loose
    if len(parts) > limit:
        parts = [*parts[:limit], f"+{len(parts) - limit} more"]
    return ", ".join(parts) if parts else "-"


def ledger_table(ledgers: Sequence[Ledger], holdout: Ledger | None = None) -> list[str]:
    """Markdown table: one row per model (and the hold-out), subjects, count, quantity range."""
    unit = "mL"
    lines = [
        "| model | learnt from | subjects (training) | n | validated on | generated pairs (via) | quantity range |",
        "|---|---|---|---|---|---|---|",
    ]
    for ledger in [*ledgers, *([holdout] if holdout else [])]:
        low_high = f"{ledger.value_range[0]:.1f}-{ledger.value_range[1]:.1f} {unit}" if ledger.value_range else "-"
        via = f"{ledger.synthetic_pairs} ({', '.join(ledger.via)})" if ledger.synthetic_pairs else "-"
        lines.append(
            f"| {ledger.model} | {ledger.source} | {compress_ids(ledger.training)} | {len(ledger.training)} "
            f"| {len(ledger.validation) or '-'} | {via} | {low_high} |"
        )
    return lines
