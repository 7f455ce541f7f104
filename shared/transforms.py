"""Dictionary transforms MONAI lacks: label-set, value-range and grid checks, the ventricle condition ``c``.

Both read the file name from the MetaTensor's metadata, so their errors name the file.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from shared.conditioning.features import MinMaxNormaliser, measure_ventricles
from shared.io import InputError, Volume, check_same_grid


def _source(value: Any) -> str:
    """File a MetaTensor was loaded from, or ``<memory>``."""
    meta = getattr(value, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<memory>"))


def _affine(value: Any) -> np.ndarray:
    affine = getattr(value, "affine", None)
    return np.eye(4) if affine is None else np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)


class CheckLabelSetd(MapTransform):
    """Fail with ``<file>: labels outside the declared set: ...`` when a label map holds other ids.

    Args:
        keys: label-map keys.
        allowed: the declared label ids (e.g. :data:`shared.labels.SYNTHSEG_LABEL_IDS`).
    """

    def __init__(self, keys: KeysCollection, allowed: Iterable[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.allowed = np.asarray(sorted(int(v) for v in allowed))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            values = np.unique(np.asarray(torch.as_tensor(d[key]).cpu()))
            if not np.array_equal(values, np.round(values)):
                raise InputError(f"{_source(d[key])}: label map has non-integer values")
            unknown = np.setdiff1d(values.astype(np.int64), self.allowed)
            if unknown.size:
                shown = ", ".join(str(v) for v in unknown[:10].tolist()) + (" ..." if unknown.size > 10 else "")
                raise InputError(f"{_source(d[key])}: labels outside the declared set: {shown}")
        return d


class CheckSameGridd(MapTransform):
    """Fail with ``<label file>: shape ... differs from <image>`` (or ``affine differs``) for mismatched pairs.

    Args:
        keys: keys that must lie on the grid of ``reference_key`` (e.g. ``label``).
        reference_key: the image key.
    """

    def __init__(self, keys: KeysCollection, reference_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key

    @staticmethod
    def _volume(value: Any) -> Volume:
        spatial = tuple(torch.as_tensor(value).shape[-3:])  # channel-first or not: the last three axes
        return Volume(np.broadcast_to(np.uint8(0), spatial), _affine(value), Path(_source(value)))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        reference = self._volume(d[self.reference_key])
        for key in self.key_iterator(d):
            check_same_grid(reference, self._volume(d[key]))
        return d


class VentricleConditiond(MapTransform):
    """Add the condition ``c`` (min-max normalised ventricle ratio) of a label map with FreeSurfer ids.

    Runs before the ids are mapped to class indices. The label's affine (from its
    MetaTensor) gives the voxel volume.

    Args:
        keys: the label-map key (one).
        normaliser: a :class:`~shared.conditioning.features.MinMaxNormaliser` or the path of its JSON.
        c_key: where ``c`` goes, as a float32 tensor of shape ``(1,)``.
        ratio_key: optional key for the raw ratio (for manifests and plots).
    """

    def __init__(
        self,
        keys: KeysCollection,
        normaliser: MinMaxNormaliser | str | os.PathLike,
        c_key: str = "c",
        ratio_key: str | None = "ratio",
    ) -> None:
        super().__init__(keys)
        self.normaliser = normaliser if isinstance(normaliser, MinMaxNormaliser) else MinMaxNormaliser.load(normaliser)
        self.c_key, self.ratio_key = c_key, ratio_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            labels = np.asarray(torch.as_tensor(d[key]).cpu())
            labels = labels[0] if labels.ndim == 4 else labels
            try:
                ratio = measure_ventricles(labels, _affine(d[key])).ratio
            except ValueError as error:
                raise InputError(f"{_source(d[key])}: {error}") from error
            d[self.c_key] = torch.tensor([self.normaliser.transform(ratio)], dtype=torch.float32)
            if self.ratio_key:
                d[self.ratio_key] = torch.tensor([ratio], dtype=torch.float32)
        return d


class CheckRanged(MapTransform):
    """Fail with ``<file>: intensities outside [low, high] ...`` for data not prepared as the model expects.

    Args:
        keys: image keys.
        low, high: the expected value range (e.g. ``-1, 1`` for prepared tumour pairs).
        hint: appended to the message (how to prepare the data).
    """

    def __init__(
        self, keys: KeysCollection, low: float, high: float, hint: str = "", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.low, self.high, self.hint = float(low), float(high), hint

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            values = torch.as_tensor(d[key])
            low, high = float(values.min()), float(values.max())
            if low < self.low - 1e-4 or high > self.high + 1e-4:
                hint = f"; {self.hint}" if self.hint else ""
                raise InputError(
                    f"{_source(d[key])}: intensities outside [{self.low:g}, {self.high:g}] "
                    f"(found {low:.4g} .. {high:.4g}){hint}"
                )
        return d
