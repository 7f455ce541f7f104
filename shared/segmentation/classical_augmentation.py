"""Classical (offline) augmentation of real pairs: the tumour study's "real + augmentation x5" variant.

Paper 003 compares its generated pairs with standard augmentation. Each real FLAIR + mask pair
gives ``copies`` new pairs, every one drawn with its own seed from MONAI's dictionary
transforms applied to image and mask together: a random affine (rotation up to 15 degrees
about each axis, scaling 0.9-1.1, translation up to 4 voxels; bilinear for the image,
nearest for the mask), a left-right flip (axis 0) with probability 0.5, a gamma change of
contrast and Gaussian noise on the image only. :func:`write_augmented_pairs` writes them as a
pair folder (``images/``, ``labels/``, ``manifest.csv``) that nnU-Net set assembly takes as
synthetic pairs, like a generation folder.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from shared.io import InputError, item_subject, load_image, load_label_map, read_datalist, save_volume, write_csv


def augmentation_transform(seed: int) -> Any:
    """The seeded MONAI ``Compose`` on ``{"image": (1, X, Y, Z), "label": (1, X, Y, Z)}``."""
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
    )  # fmt: skip

    angle = math.radians(15.0)
    transform = Compose([
        RandAffined(keys=["image", "label"], prob=1.0, rotate_range=(angle, angle, angle),
                    scale_range=(0.1, 0.1, 0.1), translate_range=(4, 4, 4), mode=("bilinear", "nearest"),
                    padding_mode="border"),
        RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
        RandAdjustContrastd(keys="image", prob=0.5, gamma=(0.8, 1.25)),
        RandGaussianNoised(keys="image", prob=0.5, std=0.02),
    ])  # fmt: skip
    transform.set_random_state(seed=seed)
    return transform


def augment_pair(image: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One augmented ``(image float32, mask int16)`` pair ``(X, Y, Z)`` from a real one (same grid)."""
    if image.shape != mask.shape:
        raise InputError(f"image {image.shape} and mask {mask.shape}: not on one grid")
    pair = {"image": image[None].astype(np.float32), "label": mask[None].astype(np.float32)}
    sample = augmentation_transform(seed)(pair)
    new_image = np.asarray(sample["image"][0], dtype=np.float32)
    new_mask = np.rint(np.asarray(sample["label"][0])).astype(np.int16)
    return new_image, new_mask


def write_augmented_pairs(
    datalist: str | os.PathLike,
    output_dir: str | os.PathLike,
    copies: int = 5,
    seed: int = 0,
    sections: list[str] | None = None,
) -> Path:
    """``copies`` augmented pairs per real pair of ``datalist``; returns the manifest.

    Pair ``aug_<case>_<k>`` is drawn with seed ``seed + 1000 * index + k``, so a rerun writes the
    same files. The output folder is replaced as a whole (written beside it, then renamed).
    """
    import shutil

    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise InputError(f"copies: must be an integer >= 1, got {copies!r}")
    items = read_datalist(datalist, sections)
    if not items:
        raise InputError(f"{datalist}: no cases")
    output_dir = Path(output_dir)
    partial = output_dir.parent / f".{output_dir.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    rows: list[dict[str, Any]] = []
    try:
        for index, item in enumerate(items):
            image, mask = load_image(item["image"]), load_label_map(item["label"])
            stem = Path(item["label"]).name.split(".")[0]
            for k in range(copies):
                name, pair_seed = f"aug_{stem}_{k}.nii.gz", seed + 1000 * index + k
                new_image, new_mask = augment_pair(image.array, mask.array, pair_seed)
                save_volume(partial / "images" / name, new_image, image.affine, dtype=np.float32)
                save_volume(partial / "labels" / name, new_mask, mask.affine, dtype=np.int16)
                rows.append({"image": f"images/{name}", "label": f"labels/{name}", "source": str(item["label"]),
                             "subject": item_subject(item), "seed": pair_seed})  # fmt: skip
        write_csv(partial / "manifest.csv", rows, ["image", "label", "source", "subject", "seed"])
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(output_dir, ignore_errors=True)
    partial.rename(output_dir)
    return output_dir / "manifest.csv"
