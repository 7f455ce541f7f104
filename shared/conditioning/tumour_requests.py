"""Tumour condition vectors for the slice-based LDM: saved with the model, requested at sampling.

Training saves ``training_conditions.json`` beside the model: the training set's normalised
9-vectors (docs/method.md, section 1 order) and the feature normaliser (volume and area maxima).
A sampling request (config value ``conditions``) is one of:

- one vector of 9 numbers (used for every sample) or a list of such vectors;
- ``{"table": "<file.csv>"}``: the nine normalised feature columns of a condition table
  (``tumours.csv`` from ``scripts/prepare_tumour_data.py`` or ``compute_conditions.py``);
- ``{"random": {}}`` or ``{"random": {"volume": [low, high]}}``: consistent random vectors
  (:func:`random_tumour_conditions`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.conditioning.features import TUMOUR_FEATURE_NAMES, TumourFeatureNormaliser
from shared.io import InputError, read_csv, read_datalist, read_json, write_json

logger = logging.getLogger(__name__)

N_FEATURES = len(TUMOUR_FEATURE_NAMES)
#: Standard deviation (fraction of the grid) of the jitter added to a training tumour's centre.
CENTRE_JITTER = 0.03


def _vectors(values: Any, where: str) -> np.ndarray:
    """``(N, 9)`` finite floats from nested lists, or an :class:`InputError` naming ``where``."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{where}: tumour condition vectors must be numbers ({error})") from error
    array = array.reshape(1, -1) if array.ndim == 1 else array
    if array.ndim != 2 or array.shape[1] != N_FEATURES or array.shape[0] == 0:
        got = array.shape[-1] if array.ndim >= 1 and array.size else 0
        raise InputError(
            f"{where}: a tumour condition vector needs {N_FEATURES} values "
            f"({', '.join(TUMOUR_FEATURE_NAMES)}), got {got}"
        )
    if not np.all(np.isfinite(array)):
        raise InputError(f"{where}: tumour condition vectors must be finite")
    return array


def save_training_conditions(datalist: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Save the training items' ``condition`` vectors and the normaliser beside the datalist to ``output``."""
    items = read_datalist(datalist, ["training"])
    missing = [i for i, item in enumerate(items) if "condition" not in item]
    if missing:
        raise InputError(
            f"{datalist}: training item {missing[0]} has no 'condition'; "
            "prepare the data with scripts/prepare_tumour_data.py"
        )
    vectors = _vectors([item["condition"] for item in items], str(datalist))
    normaliser = TumourFeatureNormaliser.load(Path(datalist).parent / "tumours_normaliser.json")
    return write_json(
        output,
        {
            "feature_names": list(TUMOUR_FEATURE_NAMES),
            "volume_max": normaliser.volume_max,
            "surface_area_max": normaliser.surface_area_max,
            "training_vectors": vectors.tolist(),
        },
    )


def load_training_conditions(path: str | os.PathLike) -> tuple[np.ndarray, TumourFeatureNormaliser]:
    """``(training vectors (N, 9), normaliser)`` saved by :func:`save_training_conditions`."""
    data = read_json(path)
    try:
        normaliser = TumourFeatureNormaliser(float(data["volume_max"]), float(data["surface_area_max"]))
        return _vectors(data["training_vectors"], str(path)), normaliser
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: not a training-conditions file ({error})") from error


def random_tumour_conditions(
    n: int,
    training: np.ndarray,
    normaliser: TumourFeatureNormaliser,
    rng: np.random.Generator,
    volume: Sequence[float] | None = None,
) -> np.ndarray:
    """``n`` consistent random tumour vectors ``(n, 9)``.

    Each draw takes a training tumour as template for shape and place: volume uniform in
    ``volume`` (normalised; default: the training range), sphericity the template's, surface area
    then *follows* from volume and sphericity (``A = (36 pi V^2)^(1/3) / s``), the bounding box is
    the template's scaled by ``(V / V_template)^(1/3)``, and the centre is the template's (a place
    where the training data has a tumour, so inside the brain) plus a small jitter, moved where
    needed so that the box stays inside the grid.
    """
    training = training[training[:, 0] > 0]
    if training.size == 0:
        raise InputError("random tumour conditions: the training set has no non-empty tumour")
    low, high = (float(training[:, 0].min()), float(training[:, 0].max())) if volume is None else map(float, volume)
    if not 0 < low <= high:
        raise InputError(f"random tumour conditions: volume range must satisfy 0 < low <= high, got [{low}, {high}]")
    templates = training[rng.integers(0, len(training), size=n)]
    v = rng.uniform(low, high, size=n)
    sphericity = templates[:, 2]
    raw_volume = v * normaliser.volume_max
    area = (36.0 * np.pi * raw_volume**2) ** (1.0 / 3.0) / sphericity / normaliser.surface_area_max
    box = np.clip(templates[:, 6:9] * (v / templates[:, 0])[:, None] ** (1.0 / 3.0), 1e-3, 1.0)
    centre = templates[:, 3:6] + rng.normal(0.0, CENTRE_JITTER, size=(n, 3))
    centre = np.clip(centre, box / 2, 1.0 - box / 2)
    return np.column_stack([v, area, sphericity, centre, box])


def resolve_tumour_conditions(
    request: Any, num_samples: int, training: np.ndarray, normaliser: TumourFeatureNormaliser, seed: int = 0
) -> np.ndarray:
    """The normalised tumour vectors ``(N, 9)`` a request asks for (see the module docstring).

    One vector is repeated ``num_samples`` times; a table or list gives its own rows;
    ``random`` draws ``num_samples``. Vectors outside the training range are warned about.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise InputError(f"num_samples: expected an integer >= 1, got {num_samples!r}")
    rng = np.random.default_rng(seed)
    if isinstance(request, Mapping) and set(request) == {"random"}:
        options = request["random"] or {}
        if not isinstance(options, Mapping) or set(options) - {"volume"}:
            raise InputError(f"conditions: random takes an optional volume range, got {options!r}")
        vectors = random_tumour_conditions(num_samples, training, normaliser, rng, options.get("volume"))
    elif isinstance(request, Mapping) and set(request) == {"table"}:
        rows = read_csv(request["table"])
        missing = [name for name in TUMOUR_FEATURE_NAMES if rows and name not in rows[0]]
        if not rows or missing:
            raise InputError(f"{request['table']}: condition table needs the columns {', '.join(TUMOUR_FEATURE_NAMES)}")
        vectors = _vectors([[row[name] for name in TUMOUR_FEATURE_NAMES] for row in rows], str(request["table"]))
    elif isinstance(request, Mapping):
        raise InputError(
            "conditions: expected 9 values, a list of vectors, {table: file} or {random: {}}, "
            f"got keys {sorted(request)}"
        )
    else:
        vectors = _vectors(request, "conditions")
        vectors = np.repeat(vectors, num_samples, axis=0) if len(vectors) == 1 else vectors
    outside = (vectors < training.min(axis=0) - 1e-9) | (vectors > training.max(axis=0) + 1e-9)
    if outside.any():
        names = sorted({TUMOUR_FEATURE_NAMES[j] for j in np.nonzero(outside)[1]})
        logger.warning("tumour conditions outside the training range (%s): results may degrade", ", ".join(names))
    return vectors
