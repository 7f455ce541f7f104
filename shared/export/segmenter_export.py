"""Export a trained nnU-Net v2 model as a MONAI segmentation bundle (``bundles/nnunet_segmenter`` filled in).

The bundle's ``models/`` gets ``model.pt`` (the network's state dict, loadable with
``weights_only=True``), ``plans.json`` and ``dataset.json``; its configs get the model's
configuration and patch size; its metadata the model's labels and channel. Everything else is
:func:`shared.export.bundle_export.export_bundle`: configs, docs, LICENSE, the run-time code as
``scripts/``, pinned packages, ``large_files.yml``, one atomic zip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shared.export.bundle_export import export_bundle
from shared.io import InputError, read_json
from shared.nnunet_inference import export_weights

TEMPLATE = Path(__file__).resolve().parents[2] / "bundles" / "nnunet_segmenter"


def _configuration_of(model_folder: Path) -> str:
    """``nnUNetTrainer__nnUNetPlans__3d_fullres`` -> ``3d_fullres``."""
    parts = model_folder.name.split("__")
    if len(parts) != 3:
        raise InputError(f"{model_folder}: expected an nnU-Net model folder named <trainer>__<plans>__<configuration>")
    return parts[2]


def _label_metadata(dataset: dict[str, Any], patch_size: list[int]) -> dict[str, Any]:
    labels = {int(value): name for name, value in dataset["labels"].items() if isinstance(value, int)}
    names = ", ".join(f"{value}: {name}" for value, name in sorted(labels.items()))
    channels = dataset.get("channel_names") or dataset.get("modality") or {"0": "image"}
    image = {
        "type": "image", "format": "magnitude", "modality": "MR", "num_channels": len(channels),
        "spatial_shape": patch_size, "dtype": "float32", "value_range": [], "is_patch_data": True,
        "channel_def": {str(k): str(v) for k, v in channels.items()},
    }  # fmt: skip
    pred = {
        "type": "image", "format": "segmentation", "num_channels": len(labels), "spatial_shape": patch_size,
        "dtype": "float32", "value_range": [], "is_patch_data": True,
        "channel_def": {str(value): name for value, name in sorted(labels.items())},
    }  # fmt: skip
    return {
        "label_classes": names,
        "pred_classes": names,
        "image_classes": ", ".join(f"channel {k}: {v}" for k, v in channels.items()),
        "network_data_format": {"inputs": {"image": image}, "outputs": {"pred": pred}},
    }


def export_segmenter(
    model_folder: str | os.PathLike,
    output: str | os.PathLike,
    fold: str = "all",
    checkpoint: str = "checkpoint_final.pth",
    template: str | os.PathLike = TEMPLATE,
) -> dict[str, Any]:
    """Write the MONAI bundle zip of one trained nnU-Net model; returns a summary.

    Args:
        model_folder: ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``.
        output: the ``.zip`` to write.
        fold: the fold whose weights to export (``all``, or ``0``-``4``).
        checkpoint: the checkpoint file in ``fold_<fold>``.
        template: the bundle to fill (default: ``bundles/nnunet_segmenter``).
    """
    model_folder = Path(model_folder)
    configuration = _configuration_of(model_folder)
    weights = model_folder / f"fold_{fold}" / checkpoint
    for path in (model_folder / "plans.json", model_folder / "dataset.json", weights):
        if not path.is_file():
            raise InputError(f"{path}: missing (is {model_folder} a trained nnU-Net model folder?)")
    plans, dataset = read_json(model_folder / "plans.json"), read_json(model_folder / "dataset.json")
    if configuration not in plans.get("configurations", {}):
        raise InputError(f"{model_folder / 'plans.json'}: no configuration {configuration!r}")
    patch_size = [int(s) for s in plans["configurations"][configuration]["patch_size"]]
    with tempfile.TemporaryDirectory(prefix="nnunet_export_") as staging:
        models = Path(staging)
        details = export_weights(weights, models / "model.pt")
        shutil.copyfile(model_folder / "plans.json", models / "plans.json")
        shutil.copyfile(model_folder / "dataset.json", models / "dataset.json")
        overrides = {"configuration": configuration, "patch_size": patch_size}
        summary = export_bundle(template, models, output, preset=None, overrides=overrides,
                                metadata_updates=_label_metadata(dataset, patch_size))  # fmt: skip
    return {**summary, **details, "configuration": configuration, "patch_size": patch_size}
