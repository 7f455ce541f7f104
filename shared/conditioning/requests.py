"""Turning a user's request into the conditions ``c`` of the mask generator.

A request (a config value) is one of:

- a list of numbers: the ``c`` values themselves;
- ``{"range": [low, high]}``: ``num_samples`` evenly spaced values;
- ``{"uniform": [low, high]}``: ``num_samples`` values drawn uniformly;
- ``{"histogram": {"edges": [e0, ..., eK], "weights": [w1, ..., wK]}}``: bins drawn with the
  given weights, then uniformly inside the bin (to match a target distribution);
- ``{"volumes_ml": [v1, ...], "icv_ml": 1450}``: requested ventricle volumes, turned into
  ratios with the reference ICV and into ``c`` with the saved normaliser.

``c`` outside ``[0, 1]`` is allowed (extrapolation) and reported by the normaliser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shared.conditioning.features import MinMaxNormaliser
from shared.io import InputError

REQUEST_KINDS = ("range", "uniform", "histogram", "volumes_ml")


def _numbers(values: Any, what: str) -> np.ndarray:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InputError(f"conditions: {what} must be a list of numbers, got {values!r}")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        raise InputError(f"conditions: {what} must be numbers, got {bad[0]!r}")
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise InputError(f"conditions: {what} must be finite numbers")
    return array


def _pair(values: Any, what: str) -> tuple[float, float]:
    array = _numbers(values, what)
    if array.shape != (2,) or array[0] > array[1]:
        raise InputError(f"conditions: {what} must be [low, high] with low <= high, got {values!r}")
    return float(array[0]), float(array[1])


def resolve_conditions(request: Any, num_samples: int, normaliser: MinMaxNormaliser, seed: int = 0) -> np.ndarray:
    """The ``c`` values ``(N,)`` a request asks for (see the module docstring).

    Raises:
        InputError: malformed request, non-numeric values, ``num_samples < 1``, or a ``c`` whose
            ventricle ratio would be negative (or at least 1).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise InputError(f"num_samples: expected an integer >= 1, got {num_samples!r}")
    rng = np.random.default_rng(seed)
    if not isinstance(request, Mapping):
        c = _numbers(request, "c values")
        if c.size == 0:
            raise InputError("conditions: the list of c values is empty")
    elif len(request) != 1 and set(request) != {"volumes_ml", "icv_ml"}:
        raise InputError(f"conditions: expected one of {', '.join(REQUEST_KINDS)}, got keys {sorted(request)}")
    elif "range" in request:
        c = np.linspace(*_pair(request["range"], "range"), num_samples)
    elif "uniform" in request:
        c = rng.uniform(*_pair(request["uniform"], "uniform"), size=num_samples)
    elif "histogram" in request:
        spec = request["histogram"]
        edges = _numbers(spec.get("edges") if isinstance(spec, Mapping) else None, "histogram edges")
        weights = _numbers(spec.get("weights"), "histogram weights")
        if edges.size != weights.size + 1 or np.any(np.diff(edges) <= 0) or np.any(weights < 0) or weights.sum() <= 0:
            raise InputError("conditions: histogram needs increasing edges, one more than non-negative weights")
        bins = rng.choice(weights.size, size=num_samples, p=weights / weights.sum())
        c = rng.uniform(edges[bins], edges[bins + 1])
    elif "volumes_ml" in request:
        volumes = _numbers(request["volumes_ml"], "volumes_ml")
        icv = request.get("icv_ml")
        if isinstance(icv, bool) or not isinstance(icv, (int, float)) or icv <= 0:
            raise InputError(f"conditions: volumes_ml needs a reference icv_ml > 0, got {icv!r}")
        if np.any(volumes < 0):
            raise InputError("conditions: volumes_ml must be >= 0")
        c = np.asarray(normaliser.transform(volumes / float(icv)))
    else:
        raise InputError(f"conditions: expected one of {', '.join(REQUEST_KINDS)}, got keys {sorted(request)}")
    c = np.atleast_1d(np.asarray(c, dtype=np.float64))
    ratios = c * (normaliser.maximum - normaliser.minimum) + normaliser.minimum
    impossible = (ratios < 0) | (ratios >= 1)
    if np.any(impossible):
        index = int(np.flatnonzero(impossible)[0])
        raise InputError(
            f"conditions: c={c[index]:.3g} maps to a {normaliser.quantity} of {ratios[index]:.3g}, outside [0, 1) "
            f"(no brain has negative ventricles or ventricles filling the skull); this normaliser allows "
            f"c in [{-normaliser.minimum / (normaliser.maximum - normaliser.minimum):.3g}, "
            f"{(1 - normaliser.minimum) / (normaliser.maximum - normaliser.minimum):.3g})"
        )
    normaliser.report_extrapolation(c)
    return c
