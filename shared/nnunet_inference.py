"""A trained nnU-Net v2 model as MONAI bundle parts: its network, built from nnU-Net's plans, and its
sliding-window prediction as a MONAI ``Inferer``.

What MONAI 1.6.1 offers and what is written here, with nnunetv2 2.8.1:

* the network: ``monai.apps.nnunet.get_network_from_nnunet_plans`` builds it from ``plans.json``
  and ``dataset.json`` (used, without its checkpoint argument: it loads with
  ``weights_only=True``, which nnU-Net's checkpoints, holding numpy scalars, refuse);
  :func:`build_network` then turns deep supervision off, as nnU-Net's predictor does;
* the weights: :func:`export_weights` reads ``checkpoint_final.pth`` once (``weights_only=False``,
  the checkpoint being the user's own) and saves the plain state dict as ``models/model.pt``;
* prediction: ``monai.apps.nnunet.get_nnunet_monai_predictor`` hard-codes ``cuda:0``, so
  :class:`NnUNetInferer` reproduces nnU-Net's predictor with MONAI's ``SlidingWindowInferer``
  (Gaussian weighting, sigma 1/8 of the patch, half-patch steps, zero padding of small images)
  and optional mirroring test-time augmentation;
* preprocessing is MONAI transforms in the bundle's config (nnU-Net's array axis order, crop to
  the non-zero box, z-score), inverted after prediction with ``Invertd``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer, SlidingWindowInferer

from shared.io import InputError


def build_network(
    plans_file: str | os.PathLike, dataset_file: str | os.PathLike, configuration: str
) -> torch.nn.Module:
    """nnU-Net's network for ``configuration`` from its plans, deep supervision off (one output at full size)."""
    from monai.apps.nnunet import get_network_from_nnunet_plans

    for path in (plans_file, dataset_file):
        if not Path(path).is_file():
            raise InputError(f"{path}: missing (export the model with scripts/export_segmenter.py)")
    network = get_network_from_nnunet_plans(str(plans_file), str(dataset_file), configuration)
    decoder = getattr(network, "decoder", None)
    if decoder is not None and hasattr(decoder, "deep_supervision"):
        decoder.deep_supervision = False
    return network


def export_weights(checkpoint: str | os.PathLike, destination: str | os.PathLike) -> dict[str, Any]:
    """Save the network weights of an nnU-Net ``checkpoint_final.pth`` as a plain state dict; returns its metadata.

    The metadata are what inference needs besides the weights: ``trainer_name`` and
    ``inference_allowed_mirroring_axes``.
    """
    data = torch.load(checkpoint, map_location="cpu", weights_only=False)  # nnU-Net's own format (numpy scalars)
    if "network_weights" not in data:
        raise InputError(f"{checkpoint}: not an nnU-Net checkpoint (no network_weights)")
    weights = {name: tensor.detach().clone().contiguous() for name, tensor in data["network_weights"].items()}
    torch.save(weights, destination)
    axes = data.get("inference_allowed_mirroring_axes")
    return {"trainer_name": data.get("trainer_name"), "mirror_axes": list(axes) if axes is not None else []}


class NnUNetInferer(Inferer):
    """nnU-Net's sliding-window prediction as a MONAI ``Inferer``: logits ``(B, K, *spatial)`` of an image.

    Args:
        patch_size: nnU-Net's patch size (the plans' ``patch_size``), in the array's axis order.
        tile_overlap: overlap of neighbouring windows (nnU-Net's ``tile_step_size`` 0.5 -> 0.5).
        mirror_axes: spatial axes (0-based) to mirror for test-time augmentation, as nnU-Net's
            ``inference_allowed_mirroring_axes``; empty: no mirroring (``--disable_tta``).
        sw_batch_size: windows per network call.
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        tile_overlap: float = 0.5,
        mirror_axes: Sequence[int] = (),
        sw_batch_size: int = 1,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(tile_overlap) < 1.0:
            raise InputError(f"tile_overlap: expected a value in [0, 1), got {tile_overlap}")
        if any(int(axis) not in range(len(patch_size)) for axis in mirror_axes):
            raise InputError(f"mirror_axes: expected axes among 0..{len(patch_size) - 1}, got {list(mirror_axes)}")
        self.mirror_axes = tuple(int(axis) for axis in mirror_axes)
        self.window = SlidingWindowInferer(
            roi_size=tuple(int(s) for s in patch_size), sw_batch_size=int(sw_batch_size), overlap=float(tile_overlap),
            mode="gaussian", sigma_scale=0.125, padding_mode="constant", cval=0.0,
        )  # fmt: skip

    def _predict(self, network: Callable[..., Any]) -> Callable[[torch.Tensor], torch.Tensor]:
        def logits(x: torch.Tensor) -> torch.Tensor:
            out = network(x)
            return out[0] if isinstance(out, (list, tuple)) else out

        def mirrored(x: torch.Tensor) -> torch.Tensor:
            total = logits(x)
            flips = [
                c for n in range(1, len(self.mirror_axes) + 1) for c in itertools.combinations(self.mirror_axes, n)
            ]
            for axes in flips:
                dims = [axis + 2 for axis in axes]
                total = total + torch.flip(logits(torch.flip(x, dims)), dims)
            return total / (len(flips) + 1)

        return mirrored

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """Logits of ``inputs`` ``(B, C, *spatial)`` stitched over sliding windows (mirrored if asked)."""
        return self.window(inputs, self._predict(network), *args, **kwargs)
