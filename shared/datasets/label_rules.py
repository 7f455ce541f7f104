"""Turning a dataset's own label ids into the ones the models use.

- :class:`AnatomyLabels`: a FreeSurfer ``aseg`` or SynthSeg segmentation onto SynthSeg's 33
  classes (:data:`shared.labels.SYNTHSEG_CLASSES`). Cortical parcels (``aparc+aseg``, SynthSeg
  ``--parc``: 1000-1999 left, 2000-2999 right) become left / right cortex. FreeSurfer ids that
  SynthSeg counts as a tissue of its own take the nearest voxel of that tissue: corpus callosum
  (251-255) and white-matter hypointensities (77-79) the nearest cerebral white matter, choroid
  plexus (31/63) the nearest lateral ventricle. Any other id outside the class set (vessel 30/62,
  5th ventricle 72, optic chiasm 85, ...) takes the class of the nearest voxel inside the set, so
  no voxel of the head is dropped.
- :class:`WholeTumour`: a BraTS segmentation (2021: 1 necrosis, 2 oedema, 4 enhancing; 2023:
  1, 2, 3) onto the whole-tumour mask ``0/1``. An id outside the declared ones is an error: it
  means the file is not the segmentation it was said to be.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from shared.io import InputError
from shared.labels import SYNTHSEG_LABEL_IDS

#: Cortical parcel ranges of FreeSurfer / SynthSeg and the cortex class they belong to.
CORTICAL_PARCELS: tuple[tuple[int, int, int], ...] = ((1000, 1999, 3), (2000, 2999, 42))

#: FreeSurfer ids folded into a SynthSeg tissue: ids -> the classes whose nearest voxel they take.
FOLDED_INTO: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = (
    ((251, 252, 253, 254, 255, 77, 78, 79), (2, 41)),  # corpus callosum, WM hypointensities -> cerebral WM
    ((31, 63), (4, 43)),  # choroid plexus -> lateral ventricle
)

#: BraTS 2021 (1, 2, 4) and 2023 (1, 2, 3) tumour sub-region ids.
BRATS_TUMOUR_IDS: tuple[int, ...] = (1, 2, 3, 4)


@dataclass(frozen=True)
class AnatomyLabels:
    """Map a brain segmentation onto ``class_ids`` (default: SynthSeg's 33 ids, background 0)."""

    class_ids: tuple[int, ...] = SYNTHSEG_LABEL_IDS

    def __call__(self, labels: np.ndarray, name: str = "label map") -> np.ndarray:
        """``(X, Y, Z)`` integer ids -> ``(X, Y, Z)`` int16 ids of ``class_ids``.

        Raises:
            InputError: the map holds no id of the class set but background.
        """
        labels = np.asarray(labels).astype(np.int32, copy=True)
        for low, high, cortex in CORTICAL_PARCELS:
            labels[(labels >= low) & (labels <= high)] = cortex
        for ids, tissue in FOLDED_INTO:
            present = np.isin(labels, ids)
            targets = np.isin(labels, tissue)
            if present.any() and targets.any():
                labels[present] = labels[_nearest_of(targets)][present]
        known = np.isin(labels, self.class_ids)
        if not np.any(known & (labels != 0)):
            raise InputError(f"{name}: no brain label of the class set (ids {self.class_ids[1]}-{self.class_ids[-1]})")
        if not np.all(known):
            labels = labels[_nearest_of(known)]
        return labels.astype(np.int16)


def _nearest_of(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Index arrays that send every voxel of ``(X, Y, Z)`` to its nearest voxel inside ``mask``."""
    return tuple(ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True))


@dataclass(frozen=True)
class WholeTumour:
    """Map a tumour segmentation's sub-regions ``tumour_ids`` onto one whole-tumour label (1)."""

    tumour_ids: tuple[int, ...] = BRATS_TUMOUR_IDS

    def __post_init__(self) -> None:
        ids = tuple(int(v) for v in self.tumour_ids)
        if not ids or min(ids) < 1:
            raise InputError(f"tumour ids: expected positive label ids, got {self.tumour_ids!r}")
        object.__setattr__(self, "tumour_ids", ids)

    def __call__(self, labels: np.ndarray, name: str = "segmentation") -> np.ndarray:
        """``(X, Y, Z)`` integer ids -> ``(X, Y, Z)`` uint8 mask (0/1).

        Raises:
            InputError: ids other than background and ``tumour_ids``.
        """
        labels = np.asarray(labels)
        unknown = sorted(set(np.unique(labels).astype(np.int64).tolist()) - {0, *self.tumour_ids})
        if unknown:
            raise InputError(f"{name}: label ids {unknown} are not tumour ids {list(self.tumour_ids)} or background")
        return np.isin(labels, self.tumour_ids).astype(np.uint8)
