"""Axial slices of ``[image, mask]`` volumes as a 2D training set for the slice VAE (docs/method.md, section 4).

Each item of the volume dataset holds ``image`` ``(2, H, W, D)`` (FLAIR and mask in
``[-1, 1]``); :class:`SliceDataset` exposes every axial slice ``[..., k]`` as an item
``{"image": (2, H, W), "position": k}`` (the VAE's target is its input, see
:class:`shared.engines.reconstruction.ReconstructionPrepareBatch`).
Slices without brain (every image voxel at the volume's minimum, -1 after scaling) carry
little information; like the authors, only a fraction of them is kept (drawn once, with a seed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

#: An image slice is "empty" when all of it lies within this distance of -1 (the background).
EMPTY_TOLERANCE = 1e-3


def empty_slices(volume: torch.Tensor) -> np.ndarray:
    """``(D,)`` booleans: which axial slices of ``volume`` ``(2, H, W, D)`` have no brain in the image channel."""
    image = torch.as_tensor(volume)[0]
    return (image.flatten(0, 1).max(dim=0).values <= -1.0 + EMPTY_TOLERANCE).cpu().numpy()


class SliceDataset(Dataset):
    """Slices ``(2, H, W)`` of a dataset of volumes ``(2, H, W, D)``, with their depth index.

    Args:
        volumes: items with ``image_key`` volumes (e.g. a MONAI ``CacheDataset``).
        empty_keep_fraction: fraction of empty slices kept (authors: 0.1).
        seed: which empty slices are kept.
        image_key: item key of the volume.
    """

    def __init__(
        self,
        volumes: Sequence[dict[str, Any]],
        empty_keep_fraction: float = 0.1,
        seed: int = 0,
        image_key: str = "image",
    ) -> None:
        if not 0.0 <= empty_keep_fraction <= 1.0:
            raise ValueError(f"empty_keep_fraction must be in [0, 1], got {empty_keep_fraction}")
        self.volumes = volumes
        self.image_key = image_key
        rng = np.random.default_rng(seed)
        self.index: list[tuple[int, int]] = []
        self.dropped = 0
        for v in range(len(volumes)):
            empty = empty_slices(volumes[v][image_key])
            keep = ~empty | (rng.random(empty.shape[0]) < empty_keep_fraction)
            self.dropped += int((~keep).sum())
            self.index.extend((v, int(k)) for k in np.flatnonzero(keep))
        if not self.index:
            raise ValueError("slice dataset: no slices left (no volumes, or every slice empty)")
        logger.info("slice dataset: %d slices, %d brain-free slices dropped", len(self.index), self.dropped)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        v, k = self.index[i]
        volume = self.volumes[v][self.image_key]
        volume = volume.as_tensor() if hasattr(volume, "as_tensor") else torch.as_tensor(volume)  # no MetaTensor
        slice_ = volume[..., k]
        return {"image": slice_, "position": k}
