"""Label definitions shared by every bundle: the FreeSurfer/SynthSeg class list.

Label maps in this project use FreeSurfer look-up-table ids (as written by FreeSurfer's
``aseg`` and by SynthSeg). Networks, however, work on *class indices* ``0..K-1``; the
class list below fixes the ids and their order once, so that one-hot encodings and
logits mean the same thing in every bundle.
"""

from __future__ import annotations

from typing import Final

import numpy as np

#: SynthSeg's 33 classes (background included), in the order used for class indices.
SYNTHSEG_CLASSES: Final[dict[int, str]] = {
    0: "background",
    2: "left-cerebral-white-matter",
    3: "left-cerebral-cortex",
    4: "left-lateral-ventricle",
    5: "left-inferior-lateral-ventricle",
    7: "left-cerebellum-white-matter",
    8: "left-cerebellum-cortex",
    10: "left-thalamus",
    11: "left-caudate",
    12: "left-putamen",
    13: "left-pallidum",
    14: "3rd-ventricle",
    15: "4th-ventricle",
    16: "brain-stem",
    17: "left-hippocampus",
    18: "left-amygdala",
    24: "csf",
    26: "left-accumbens-area",
    28: "left-ventral-dc",
    41: "right-cerebral-white-matter",
    42: "right-cerebral-cortex",
    43: "right-lateral-ventricle",
    44: "right-inferior-lateral-ventricle",
    46: "right-cerebellum-white-matter",
    47: "right-cerebellum-cortex",
    49: "right-thalamus",
    50: "right-caudate",
    51: "right-putamen",
    52: "right-pallidum",
    53: "right-hippocampus",
    54: "right-amygdala",
    58: "right-accumbens-area",
    60: "right-ventral-dc",
}

#: Label ids in class-index order.
SYNTHSEG_LABEL_IDS: Final[tuple[int, ...]] = tuple(SYNTHSEG_CLASSES)

#: Ventricular system (docs/method.md, section 1): lateral (4, 43), inferior lateral (5, 44), 3rd (14), 4th (15).
VENTRICLE_LABEL_IDS: Final[tuple[int, ...]] = (4, 43, 5, 44, 14, 15)

#: Cerebrospinal fluid outside the ventricles.
CSF_LABEL_ID: Final[int] = 24

BACKGROUND_LABEL_ID: Final[int] = 0


def ventricle_mask(label_map: np.ndarray) -> np.ndarray:
    """Boolean mask of the ventricular system; same shape as ``label_map``."""
    return np.isin(label_map, VENTRICLE_LABEL_IDS)


def intracranial_mask(label_map: np.ndarray) -> np.ndarray:
    """Boolean mask of every non-background voxel (the ICV of docs/method.md, section 1)."""
    return label_map != BACKGROUND_LABEL_ID


def parenchyma_mask(label_map: np.ndarray) -> np.ndarray:
    """Brain tissue: non-background, not CSF and not ventricles."""
    return intracranial_mask(label_map) & (label_map != CSF_LABEL_ID) & ~ventricle_mask(label_map)


#: Mean FLAIR intensity per label id (before jitter, bias field and noise).
FLAIR_MEANS: Final[dict[int, float]] = {
    0: 0.0,
    2: 0.55,
    41: 0.55,  # cerebral white matter
    3: 0.68,
    42: 0.68,  # cerebral cortex
    4: 0.06,
    43: 0.06,
    5: 0.07,
    44: 0.07,
    14: 0.06,
    15: 0.07,  # ventricles
    7: 0.52,
    46: 0.52,
    8: 0.70,
    47: 0.70,  # cerebellum white matter / cortex
    10: 0.64,
    49: 0.64,  # thalamus
    11: 0.70,
    50: 0.70,  # caudate
    12: 0.67,
    51: 0.67,  # putamen
    13: 0.58,
    52: 0.58,  # pallidum
    16: 0.57,  # brain stem
    17: 0.76,
    53: 0.76,
    18: 0.74,
    54: 0.74,  # hippocampus, amygdala
    24: 0.09,  # CSF
    26: 0.70,
    58: 0.70,  # accumbens
    28: 0.60,
    60: 0.60,  # ventral DC
}

#: Intensity used for label ids missing from :data:`FLAIR_MEANS` (generic grey matter).
DEFAULT_TISSUE_MEAN: Final[float] = 0.65


def mean_intensity_map(labels: np.ndarray, gains: dict[int, float] | None = None) -> np.ndarray:
    """Piecewise-constant image ``(X, Y, Z)`` float32 from label ids."""
    lookup_ids = np.unique(labels)
    image = np.zeros(labels.shape, dtype=np.float32)
    for label_id in lookup_ids.tolist():
        mean = FLAIR_MEANS.get(label_id, DEFAULT_TISSUE_MEAN) * (gains or {}).get(label_id, 1.0)
        image[labels == label_id] = mean
    return image
