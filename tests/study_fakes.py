"""Stand-ins for the main command's expensive parts, so a whole study runs in seconds in a test.

Bundle runs and nnU-Net are replaced, nothing else: the data, starter installs, ledgers, QC
rounds, nnU-Net set assembly, the design check, evaluation, statistics and the report are the
project's own code. A training run leaves a tiny ``model.pt`` and ``model_autoencoder.pt`` where
its models go (Table 1 counts their parameters). Generated pairs are copies of real cases (their
requested conditions are the achieved ones, so QC accepts them); predictions are the truth with a share of its voxels
removed that depends on the dataset and seed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

import shared.workflow.stages as stages
from shared.io import load_label_map, read_datalist, save_volume, write_csv


def _copy_pairs(datalist: Path, folder: Path, count: int) -> list[tuple[Path, Path, dict[str, Any]]]:
    items = read_datalist(datalist)
    pairs = []
    for i in range(count):
        item = items[i % len(items)]
        image, label = folder / "images" / f"pair_{i:03d}.nii.gz", folder / "labels" / f"pair_{i:03d}.nii.gz"
        for source, target in ((item["image"], image), (item["label"], label)):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        pairs.append((image, label, item))
    return pairs


def install(monkeypatch: Any, out: Path, calls: list[tuple[Any, ...]]) -> None:
    """Replace bundle runs and nnU-Net in :mod:`shared.workflow.stages`; ``calls`` records them."""

    def generate_pairs(folder: Path, count: int, conditions: Any, guidance: float, **options: Any) -> Path:
        folder = Path(folder)
        solvers = {k: v for k, v in options.items() if k.endswith(("_sampler", "_steps"))}
        presets = {k: v for k, v in options.items() if k.endswith("preset")}
        calls.append(("generate_pairs", folder.name, count, solvers, presets))
        requests = conditions if isinstance(conditions, list) else list(np.linspace(0.2, 0.8, count))
        rows = [
            {"image": f"images/{image.name}", "label": f"labels/{label.name}", "requested_c": requests[i],
             "achieved_c": requests[i], "ventricle_ml": 10 + 10 * requests[i], "icv_ml": 1400}
            for i, (image, label, _) in enumerate(_copy_pairs(out / "data" / "brains" / "datalist.json", folder, count))
        ]  # fmt: skip
        return write_csv(folder / "manifest.csv", rows)

    def run_bundle(bundle: Path, configs: list[str], overrides: dict[str, Any], what: str, **_: Any) -> None:
        calls.append(("run_bundle", Path(bundle).name, what, overrides, configs))
        if "inference" not in configs[0]:  # training: generation is faked as well
            models = Path(overrides["ckpt_dir"])
            models.mkdir(parents=True, exist_ok=True)
            for name, size in (("model_autoencoder.pt", 3), ("model.pt", 5)):
                if not (models / name).is_file():
                    torch.save({"weight": torch.zeros(size)}, models / name)
            return
        folder, count = Path(overrides["output_dir"]), int(overrides["num_samples"])
        prepared = out / "data" / "tumours_prepared" / "datalist.json"
        rows = []
        for image, label, item in _copy_pairs(prepared, folder, count):
            names = ("volume", "centre_x", "centre_y", "centre_z")
            features = dict(zip(names, [item["condition"][0], *item["condition"][3:6]]))
            rows.append({"image": f"images/{image.name}", "label": f"labels/{label.name}",
                         **{f"requested_{k}": v for k, v in features.items()},
                         **{f"achieved_{k}": v for k, v in features.items()},
                         "tumour_voxels": int(load_label_map(label).array.sum()), "sampler": overrides["sampler"],
                         "num_inference_steps": overrides["num_inference_steps"], "seconds": 0.5})  # fmt: skip
        write_csv(folder / "manifest.csv", rows)

    def train_nnunet(dataset_id: int, nnunet_root: Path, schedule: Any, width: float, device: str, seed: int,
                     results: Path) -> None:  # fmt: skip
        calls.append(("train_nnunet", dataset_id, seed, schedule.initial_lr))
        folder = next((nnunet_root / "nnUNet_raw").glob(f"Dataset{dataset_id}_*"))
        target = stages.prediction_folder(results, folder)
        target.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed * 1000 + dataset_id)
        for truth in sorted((folder / "labelsTs").iterdir()):
            label = load_label_map(truth)
            prediction = label.array.copy()
            prediction[rng.random(prediction.shape) < 0.05 * (1 + dataset_id % 3)] = 0
            save_volume(target / truth.name, prediction, label.affine, dtype=np.uint8)

    monkeypatch.setattr(stages, "generate_pairs", generate_pairs)
    monkeypatch.setattr(stages, "run_bundle", run_bundle)
    monkeypatch.setattr(stages, "train_nnunet", train_nnunet)
