"""Condition tables: one CSV row per label map (ventricles) or tumour mask, plus the fitted normaliser.

Used by ``scripts/compute_conditions.py`` and by the pipeline. The normaliser is written
next to the CSV (``<name>_normaliser.json``) unless an existing one is supplied, in which
case it is applied unchanged (e.g. a training set's normaliser on new data).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from shared.conditioning.features import (
    TUMOUR_FEATURE_NAMES,
    MinMaxNormaliser,
    TumourFeatureNormaliser,
    mask_volume_ml,
    measure_ventricles,
    tumour_features,
)
from shared.io import InputError, load_label_map, resolve_volume_inputs, write_csv

logger = logging.getLogger(__name__)

VENTRICLE_COLUMNS: tuple[str, ...] = ("file", "ventricle_ml", "icv_ml", "ratio", "c")
TUMOUR_COLUMNS: tuple[str, ...] = ("file", *TUMOUR_FEATURE_NAMES, "volume_voxels", "surface_area_voxels", "volume_ml")


def normaliser_path_for(csv_path: str | os.PathLike) -> Path:
    """Where the normaliser fitted for ``csv_path`` is written: ``<stem>_normaliser.json`` beside it."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}_normaliser.json")


def measure_ventricle_rows(files: Sequence[Path]) -> list[dict[str, Any]]:
    """``file``, ``ventricle_ml``, ``icv_ml`` and ``ratio`` of every label map (``c`` not yet set)."""
    rows: list[dict[str, Any]] = []
    for path in tqdm(files, desc="ventricle volumes", unit="file", disable=None):
        volume = load_label_map(path)
        try:
            measures = measure_ventricles(volume.array, volume.affine)
        except ValueError as error:
            raise InputError(f"{path}: {error}") from error
        rows.append(
            {
                "file": str(path),
                "ventricle_ml": measures.ventricle_ml,
                "icv_ml": measures.icv_ml,
                "ratio": measures.ratio,
            }
        )
    return rows


def fit_ventricle_normaliser(rows: Sequence[dict[str, Any]]) -> MinMaxNormaliser | None:
    """Min-max normaliser of the rows' ratios, or ``None`` (with a warning) when they cannot be fitted."""
    try:
        return MinMaxNormaliser.fit([row["ratio"] for row in rows], quantity="ventricle_ratio")
    except ValueError as error:
        logger.warning("c not computed: %s", error)
        return None


def add_condition_c(rows: Sequence[dict[str, Any]], normaliser: MinMaxNormaliser | None) -> None:
    """Set each row's ``c`` (empty without a normaliser); warns about rows outside [0, 1]."""
    for row in rows:
        row["c"] = normaliser.transform(row["ratio"]) if normaliser is not None else ""
    if normaliser is not None and rows:
        normaliser.report_extrapolation([row["c"] for row in rows])


def measure_tumour_rows(files: Sequence[Path]) -> list[dict[str, Any]]:
    """Raw tumour features of every mask (voxels ``> 0`` are tumour).

    Volume and surface area are in voxel units of each mask's own grid (docs/method.md, section 1:
    features on the working grid); ``volume_ml`` is added for reading. Centre and bounding
    box are taken on the RAS-reoriented grid (x: left -> right, y: posterior -> anterior,
    z: inferior -> superior) whatever the file's orientation. Empty masks give the
    all-zero vector, with a warning.
    """
    rows: list[dict[str, Any]] = []
    for path in tqdm(files, desc="tumour features", unit="file", disable=None):
        volume = load_label_map(path).to_ras()
        features = tumour_features(volume.array)
        if features[0] == 0:
            logger.warning("%s: empty tumour mask; its features are all zero", path)
        row: dict[str, Any] = {"file": str(path), **dict(zip(TUMOUR_FEATURE_NAMES, features.tolist()))}
        row.update(
            volume_voxels=features[0],
            surface_area_voxels=features[1],
            volume_ml=mask_volume_ml(volume.array > 0, volume.affine),
        )
        rows.append(row)
    return rows


def fit_tumour_normaliser(rows: Sequence[dict[str, Any]]) -> TumourFeatureNormaliser:
    """Normaliser fitted on the non-empty masks among raw rows from :func:`measure_tumour_rows`.

    Raises:
        InputError: every mask is empty.
    """
    non_empty = [row for row in rows if row["volume_voxels"] > 0]
    if not non_empty:
        where = Path(rows[0]["file"]).parent if rows else "tumour masks"
        raise InputError(f"{where}: every tumour mask is empty; cannot fit the feature normaliser")
    return TumourFeatureNormaliser.fit(_raw_tumour_features(non_empty))


def normalise_tumour_rows(rows: Sequence[dict[str, Any]], normaliser: TumourFeatureNormaliser) -> None:
    """Replace each row's nine features by the conditioning vector (raw values stay in ``*_voxels``)."""
    for row, vector in zip(rows, normaliser.transform(_raw_tumour_features(rows))):
        row.update(zip(TUMOUR_FEATURE_NAMES, vector.tolist()))


def _raw_tumour_features(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """``(N, 9)`` raw features of rows (volume and area from the ``*_voxels`` columns)."""
    return np.array(
        [
            [row["volume_voxels"], row["surface_area_voxels"], *(row[name] for name in TUMOUR_FEATURE_NAMES[2:])]
            for row in rows
        ],
        dtype=np.float64,
    ).reshape(len(rows), len(TUMOUR_FEATURE_NAMES))


@dataclass(frozen=True)
class ConditionKind:
    """How to build one kind of condition table.

    Attributes:
        name: ``"ventricles"`` or ``"tumours"`` (also the table's file stem in the pipeline).
        columns: CSV columns.
        measure: files -> raw rows.
        fit: raw rows -> normaliser (``None`` when it cannot be fitted).
        apply: sets the normalised conditions on the rows, in place.
        load: reads a saved normaliser.
    """

    name: str
    columns: tuple[str, ...]
    measure: Callable[[Sequence[Path]], list[dict[str, Any]]]
    fit: Callable[[Sequence[dict[str, Any]]], Any]
    apply: Callable[[Sequence[dict[str, Any]], Any], None]
    load: Callable[[str | os.PathLike], Any]


VENTRICLES = ConditionKind(
    "ventricles",
    VENTRICLE_COLUMNS,
    measure_ventricle_rows,
    fit_ventricle_normaliser,
    add_condition_c,
    MinMaxNormaliser.load,
)
TUMOURS = ConditionKind(
    "tumours",
    TUMOUR_COLUMNS,
    measure_tumour_rows,
    fit_tumour_normaliser,
    normalise_tumour_rows,
    TumourFeatureNormaliser.load,
)


def write_condition_table(
    kind: ConditionKind,
    source: str | os.PathLike,
    output: str | os.PathLike,
    normaliser: str | os.PathLike | None = None,
    key: str = "label",
) -> Path:
    """Condition CSV for a folder / datalist / file; fits the normaliser and saves it beside the CSV unless given.

    Args:
        kind: :data:`VENTRICLES` or :data:`TUMOURS`.
        source: folder of volumes, MONAI datalist (``.json``) or one volume file.
        output: CSV path.
        normaliser: a saved normaliser to apply instead of fitting one.
        key: the datalist field holding the file (``label`` or ``image``).
    """
    files = resolve_volume_inputs(source, key)
    given = kind.load(normaliser) if normaliser is not None else None
    rows = kind.measure(files)
    fitted = given if given is not None else kind.fit(rows)
    kind.apply(rows, fitted)
    write_csv(output, rows, kind.columns)
    if given is None and fitted is not None:
        fitted.save(normaliser_path_for(output))
    return Path(output)


def write_ventricle_table(
    source: str | os.PathLike,
    output: str | os.PathLike,
    normaliser: str | os.PathLike | None = None,
    key: str = "label",
) -> Path:
    """Ventricle CSV (``file, ventricle_ml, icv_ml, ratio, c``) for label maps; see :func:`write_condition_table`.

    Args:
        source: folder of volumes, MONAI datalist (``.json``) or one volume file.
        output: the CSV to write (its normaliser is saved beside it when one is fitted).
        normaliser: a saved (training-set) normaliser JSON to apply instead of fitting one.
        key: the datalist field holding the file (``label`` or ``image``).
    """
    return write_condition_table(VENTRICLES, source, output, normaliser, key)


def write_tumour_table(
    source: str | os.PathLike,
    output: str | os.PathLike,
    normaliser: str | os.PathLike | None = None,
    key: str = "label",
) -> Path:
    """Tumour CSV (nine normalised features, raw volume/area, mL) for masks (voxels > 0 are tumour).

    Args:
        source: folder of volumes, MONAI datalist (``.json``) or one volume file.
        output: the CSV to write (its normaliser is saved beside it when one is fitted).
        normaliser: a saved (training-set) normaliser JSON to apply instead of fitting one.
        key: the datalist field holding the file (``label`` or ``image``).
    """
    return write_condition_table(TUMOURS, source, output, normaliser, key)


def fit_ventricle_normaliser_for(
    items: Sequence[dict[str, Any]], output: str | os.PathLike, key: str = "label"
) -> Path:
    """Fit the ventricle-ratio normaliser on datalist ``items`` (their ``key`` files) and save it.

    Used at the start of training so the normaliser is saved with the model.

    Raises:
        InputError: the ratios cannot be fitted (fewer than two different values).
    """
    rows = measure_ventricle_rows([Path(item[key]) for item in items])
    normaliser = fit_ventricle_normaliser(rows)
    if normaliser is None:
        raise InputError(f"{output}: cannot fit the ventricle normaliser; training needs at least two different ratios")
    normaliser.save(output)
    return Path(output)
