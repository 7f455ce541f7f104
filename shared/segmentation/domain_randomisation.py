"""Domain randomisation in the manner of SynthSeg: images drawn from real label maps.

The alternative a user would pick instead of an LDM: keep the real label maps and draw a new
image for each, with a random mean and spread of intensity per label, then MONAI's random
blur (``RandGaussianSmooth``), bias field (``RandBiasField``) and noise
(``RandGaussianNoise``), rescaled to [0, 1]. The label map, and so the geometry, is kept
exactly; only the appearance changes. :func:`write_randomised_pairs` writes such pairs as a
generation folder (``images/``, ``labels/``, ``manifest.csv``) that nnU-Net set assembly takes
as synthetic pairs (the study's "real + domain randomisation" variant).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from shared.io import InputError, item_subject, load_label_map, read_datalist, save_volume, write_csv


def randomise_image(label_map: np.ndarray, seed: int, max_blur_voxels: float = 1.0) -> np.ndarray:
    """One random image ``(X, Y, Z)`` float32 in [0, 1] for an integer ``label_map`` ``(X, Y, Z)``.

    Background stays darkest-or-random like any other label (SynthSeg draws it too).
    """
    from monai.transforms import RandBiasField, RandGaussianNoise, RandGaussianSmooth, ScaleIntensity

    rng = np.random.default_rng(seed)
    labels = np.unique(label_map)
    means = rng.uniform(0.0, 1.0, size=labels.size)
    spreads = rng.uniform(0.0, 0.1, size=labels.size)
    index = np.searchsorted(labels, label_map)
    image = means[index] + spreads[index] * rng.standard_normal(label_map.shape)
    volume = image[None].astype(np.float32)  # channel first for MONAI
    for transform in (
        RandGaussianSmooth(sigma_x=(0.0, max_blur_voxels), sigma_y=(0.0, max_blur_voxels),
                           sigma_z=(0.0, max_blur_voxels), prob=1.0),
        RandBiasField(coeff_range=(0.0, 0.3), prob=1.0),
        RandGaussianNoise(std=0.03, prob=1.0),
        ScaleIntensity(minv=0.0, maxv=1.0),
    ):  # fmt: skip
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=int(rng.integers(2**31)))
        volume = transform(volume)
    return np.asarray(volume[0], dtype=np.float32)


def write_randomised_pairs(
    datalist: str | os.PathLike,
    output_dir: str | os.PathLike,
    copies: int = 1,
    seed: int = 0,
    sections: list[str] | None = None,
) -> Path:
    """``copies`` randomised images per real label map of ``datalist``; returns the manifest.

    Each pair ``dr_<case>_<k>`` keeps the real label map bit for bit (re-saved beside its image).
    """
    if copies < 1:
        raise InputError(f"copies: must be at least 1, got {copies}")
    items = read_datalist(datalist, sections)
    if not items:
        raise InputError(f"{datalist}: no cases")
    output_dir = Path(output_dir)
    rows: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        label = load_label_map(item["label"])
        stem = Path(item["label"]).name.split(".")[0]
        for k in range(copies):
            name = f"dr_{stem}_{k}.nii.gz"
            image = randomise_image(label.array, seed + 1000 * index + k)
            save_volume(output_dir / "images" / name, image, label.affine, dtype=np.float32)
            save_volume(output_dir / "labels" / name, label.array, label.affine, dtype=np.int16)
            rows.append({"image": f"images/{name}", "label": f"labels/{name}", "source": str(item["label"]),
                         "subject": item_subject(item), "seed": seed + 1000 * index + k})  # fmt: skip
    return write_csv(output_dir / "manifest.csv", rows, ["image", "label", "source", "subject", "seed"])
