"""Feature networks for image fidelity, trained in this project on real data (nothing is downloaded).

The field measures generated images in the features of a network trained on real images
(Inception for photographs, Med3D or RadImageNet for scans). None can be downloaded here, so the
features come from two networks trained on the study's own real training subjects:

- **3D**: the encoder of the study's nnU-Net trained on the small real set (``real``, seed 0): a
  network that learnt what matters to segment these images, on real images only. Its features
  are the global average of every encoder stage's output, concatenated (:class:`NnUNetEncoder`).
- **2.5D**: a 2D MONAI ``BasicUNet`` trained here to segment the same structure (ventricles or
  tumour) on slices of all three planes of the real training images
  (:func:`train_plane_network`); each slice's features are the global averages of its two
  deepest encoder stages (:func:`plane_features`). A distance is taken per plane (axial,
  coronal, sagittal) over the central slices of each volume, and their mean is the 2.5D figure.

Both see images mapped to [0, 1] by their 0.5 / 99.5 percentiles (nnU-Net's own z-score follows
for the 3D encoder), so that generated and real images are compared on one scale.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.evaluation.fidelity import percentiles_to_unit
from shared.io import InputError, read_json

#: Planes of an ``(X, Y, Z)`` RAS volume and the axis each slices along.
PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}


def plane_slices(volume: np.ndarray, plane: str, size: int, keep: float = 0.6) -> np.ndarray:
    """The central ``keep`` share of a volume's slices in ``plane``, each padded (by its minimum) to ``size``^2.

    Returns:
        ``(k, size, size)`` float32.
    """
    axis = PLANES[plane]
    count = volume.shape[axis]
    first = int(round(count * (1 - keep) / 2))
    picked = np.moveaxis(volume, axis, 0)[first : count - first]
    height, width = picked.shape[1:]
    if height > size or width > size:
        raise InputError(f"plane slices: a {height}x{width} slice does not fit {size}x{size}")
    top, left = (size - height) // 2, (size - width) // 2
    out = np.full((picked.shape[0], size, size), float(volume.min()), dtype=np.float32)
    out[:, top : top + height, left : left + width] = picked
    return out


def slice_size(shape: Sequence[int]) -> int:
    """The square every plane's slices are padded to: the largest side, rounded up to a multiple of 16."""
    return int(np.ceil(max(shape) / 16) * 16)


def _network() -> torch.nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(16, 16, 32, 64, 128, 16))


def train_plane_network(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    iterations: int = 400,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "cpu",
) -> torch.nn.Module:
    """A 2D ``BasicUNet`` that segments ``labels > 0`` on slices of all three planes of the real ``images``.

    Args:
        images, labels: real training volumes ``(X, Y, Z)`` and their label maps (any ids; > 0 is foreground).
        iterations: Adam steps (lr 1e-3) of ``batch_size`` random slices; DiceCE loss.
        seed: of the initialisation and the slice draws (repeatable on a CPU).

    Raises:
        InputError: no images, or images and labels that do not pair.
    """
    from monai.losses import DiceCELoss

    if not images or len(images) != len(labels):
        raise InputError(f"feature network: need pairs of images and labels, got {len(images)} and {len(labels)}")
    size = slice_size(images[0].shape)
    xs, ys = [], []
    for image, label in zip(images, labels):
        scaled = percentiles_to_unit(image)
        for plane in PLANES:
            xs.append(plane_slices(scaled, plane, size, keep=0.8))
            ys.append(plane_slices((np.asarray(label) > 0).astype(np.float32), plane, size, keep=0.8))
    x_all, y_all = torch.from_numpy(np.concatenate(xs))[:, None], torch.from_numpy(np.concatenate(ys))[:, None]
    torch.manual_seed(seed)
    network = _network().to(device)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    generator = torch.Generator().manual_seed(seed)
    network.train()
    for _ in range(int(iterations)):
        pick = torch.randint(0, x_all.shape[0], (batch_size,), generator=generator)
        optimiser.zero_grad()
        value = loss(network(x_all[pick].to(device)), y_all[pick].to(device))
        value.backward()
        optimiser.step()
    return network.eval()


@torch.no_grad()
def plane_features(network: torch.nn.Module, volume: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Per plane, ``(k, d)`` features of a volume's central slices (the two deepest encoder stages, averaged)."""
    scaled = percentiles_to_unit(volume)
    size = slice_size(volume.shape)
    device = next(network.parameters()).device
    out = {}
    for plane in PLANES:
        slices = torch.from_numpy(plane_slices(scaled, plane, size))[:, None]
        rows = []
        for start in range(0, slices.shape[0], batch):
            x0 = network.conv_0(slices[start : start + batch].to(device))
            x3 = network.down_3(network.down_2(network.down_1(x0)))
            x4 = network.down_4(x3)
            rows.append(torch.cat([x3.mean(dim=(2, 3)), x4.mean(dim=(2, 3))], dim=1).cpu())
        out[plane] = torch.cat(rows).numpy().astype(np.float64)
    return out


class NnUNetEncoder:
    """The encoder of a trained nnU-Net 3d_fullres model, as a feature extractor of whole volumes.

    Args:
        model_folder: nnU-Net's model folder (``.../nnUNetTrainer__nnUNetPlans__3d_fullres``) with
            ``plans.json``, ``dataset.json`` and ``fold_all/checkpoint_final.pth``.
        device: where the encoder runs.
    """

    def __init__(self, model_folder: str | os.PathLike, device: str = "cpu") -> None:
        from shared.nnunet_inference import build_network

        folder = Path(model_folder)
        checkpoint = folder / "fold_all" / "checkpoint_final.pth"
        if not checkpoint.is_file():
            raise InputError(f"{checkpoint}: missing (train the real-data nnU-Net first)")
        network = build_network(folder / "plans.json", folder / "dataset.json", "3d_fullres")
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
        network.load_state_dict(state)
        self.encoder = network.encoder.to(device).eval()
        self.device = device
        plans = read_json(folder / "plans.json")["configurations"]["3d_fullres"]
        schemes = plans.get("normalization_schemes", ["ZScoreNormalization"])
        if schemes != ["ZScoreNormalization"]:
            raise InputError(f"{folder}: normalisation {schemes}; only nnU-Net's z-score is supported here")
        self.mask_for_norm = bool(plans.get("use_mask_for_norm", [False])[0])

    @torch.no_grad()
    def __call__(self, volume: np.ndarray) -> np.ndarray:
        """``(1, d)`` features of an ``(X, Y, Z)`` volume (nnU-Net's axis order and z-score applied here)."""
        array = np.transpose(percentiles_to_unit(volume), (2, 1, 0)).astype(np.float32)  # nnU-Net's (z, y, x)
        region = array > 0 if self.mask_for_norm else np.ones(array.shape, dtype=bool)
        mean, sd = float(array[region].mean()), float(array[region].std()) + 1e-8
        x = torch.from_numpy((array - mean) / sd)[None, None].to(self.device)
        stages = self.encoder(x)
        stages = stages if isinstance(stages, (list, tuple)) else [stages]
        pooled = [F.adaptive_avg_pool3d(s, 1).flatten(1) for s in stages]
        return torch.cat(pooled, dim=1).cpu().numpy().astype(np.float64)
