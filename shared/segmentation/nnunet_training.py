"""Plan, preprocess, train and predict with nnU-Net v2 through its Python API, with short schedules.

nnU-Net reads its three folders from the environment (``nnUNet_raw``, ``nnUNet_preprocessed``,
``nnUNet_results``) when ``nnunetv2`` is first imported, so :func:`use_nnunet_root` sets them
before any nnU-Net import. A default nnU-Net epoch (250 iterations) takes ~15 minutes on a
2-core CPU; ``epochs`` and ``iterations_per_epoch`` make demo runs finish, and
``width_factor`` shrinks the planned network (features per stage) for them.

Each step is skipped only when its result exists and was made with the same inputs and
settings (plans: the raw ``dataset.json`` and width; a fold: ``training_settings.json``, the
schedule and the plans' hash; predictions: the checkpoint's hash and the image names);
otherwise it is redone. An interrupted training of the same settings resumes from nnU-Net's
``checkpoint_latest.pth``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.bounds import Count, DatasetId, Positive, PositiveFloat, check_fields
from shared.io import InputError, list_volumes, read_json, sha256_of, write_json

logger = logging.getLogger(__name__)

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
PLANS = "nnUNetPlans"
TRAINER = "nnUNetTrainer"


def use_nnunet_root(root: str | os.PathLike | None) -> dict[str, Path]:
    """Point nnU-Net at ``<root>/nnUNet_raw``, ``<root>/nnUNet_preprocessed``, ``<root>/nnUNet_results``.

    ``None`` keeps the environment's variables (all three must be set). Must run before
    ``nnunetv2`` is imported in this process, or with the same folders it was imported with.
    """
    if root is None:
        missing = [name for name in NNUNET_FOLDERS if not os.environ.get(name)]
        if missing:
            raise InputError(f"{', '.join(missing)}: not set; pass --nnunet_root or set nnU-Net's variables")
        folders = {name: Path(os.environ[name]) for name in NNUNET_FOLDERS}
    else:
        folders = {name: Path(root).resolve() / name for name in NNUNET_FOLDERS}
    if "nnunetv2.paths" in sys.modules:
        paths = sys.modules["nnunetv2.paths"]
        stale = [n for n in NNUNET_FOLDERS if getattr(paths, n) and Path(getattr(paths, n)) != folders[n]]
        if stale:
            raise InputError(f"{folders[stale[0]]}: nnU-Net was already imported with other folders in this process")
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)
    return folders


@dataclass(frozen=True)
class TrainingSchedule:
    """How long nnU-Net trains (nnU-Net's defaults: 1000 epochs of 250 + 50 iterations).

    Attributes:
        epochs: training epochs.
        iterations_per_epoch: training iterations per epoch.
        val_iterations_per_epoch: validation iterations per epoch (pseudo Dice only).
        initial_lr: the optimiser's initial learning rate (poly decay over ``epochs``).
        optimizer: ``sgd`` (nnU-Net's default: SGD, Nesterov momentum 0.99) or ``adamw``
            (AdamW with the same weight decay and poly schedule; learns in hundreds instead of
            thousands of iterations, see :data:`OPTIMIZERS`).
        seed: seeds Python's, numpy's and torch's generators before training (network
            initialisation, patch sampling and nnU-Net's augmentation, which runs in the
            training process when ``augmentation_processes`` is 0), so a CPU run is repeatable.
            ``None`` leaves them alone (nnU-Net's behaviour).
        batch_size: patches per iteration for every training set; ``None`` keeps the planner's,
            which grows with the set (2 for 20 cases, up to 8 for 150 at 32x64x64 patches): sets
            of different sizes would then train with different compute. It is written into the
            plans (see :func:`plan_and_preprocess`).
    """

    epochs: Positive = 1000
    iterations_per_epoch: Positive = 250
    val_iterations_per_epoch: Positive = 50
    initial_lr: PositiveFloat = 1e-2
    optimizer: str = "sgd"
    seed: Count | None = None
    batch_size: Positive | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"--optimizer: unknown '{self.optimizer}', expected one of {', '.join(OPTIMIZERS)}")
        check_fields(self)


# Measured on the demo's real ventricle set (20 brains at 32^3, quarter width, 2-core CPU): hold-out
# Dice 0.90 after 100 and 0.98 after 300 iterations with AdamW at 3e-3, 0.00 after 300 with
# nnU-Net's SGD at 1e-2 (README, "nnU-Net on a CPU schedule").
OPTIMIZERS = ("sgd", "adamw")


def _adamw_optimizers(trainer: Any) -> tuple[Any, Any]:
    """``configure_optimizers`` replacement: AdamW with nnU-Net's weight decay and poly schedule."""
    import torch
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    optimizer = torch.optim.AdamW(
        trainer.network.parameters(), lr=trainer.initial_lr, weight_decay=trainer.weight_decay
    )
    return optimizer, PolyLRScheduler(optimizer, trainer.initial_lr, trainer.num_epochs)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (what nnU-Net's training draws from)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def nnunet_folder(name: str) -> Path:
    """One of nnU-Net's folders (``nnUNet_raw`` ...) from the environment."""
    return Path(os.environ[name])


def dataset_name(dataset_id: int) -> str:
    """``DatasetXXX_Name`` of ``dataset_id`` in ``nnUNet_raw`` (one clear error when missing)."""
    raw = nnunet_folder("nnUNet_raw")
    found = sorted(p.name for p in raw.glob(f"Dataset{int(dataset_id):03d}_*") if p.is_dir())
    if len(found) != 1:
        problem = "no dataset with this id" if not found else f"several datasets with this id: {found}"
        raise InputError(f"{raw}: {problem} ({int(dataset_id)})")
    return found[0]


def plan_and_preprocess(
    dataset_id: int,
    configuration: str = "3d_fullres",
    num_processes: int = 2,
    width_factor: float = 1.0,
    force: bool = False,
    batch_size: int | None = None,
) -> Path:
    """Fingerprint (with nnU-Net's dataset integrity check), plan and preprocess one dataset.

    Args:
        width_factor: multiplies the planned features per stage (e.g. 0.25 for CPU demos;
            at least 4 features per stage).
        batch_size: replaces the planned batch size of ``configuration`` (``None``: the planner's).
        force: redo even when the plans are newer than the raw ``dataset.json``.

    Returns:
        The plans file.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    name = dataset_name(dataset_id)
    raw_json = nnunet_folder("nnUNet_raw") / name / "dataset.json"
    plans_file = nnunet_folder("nnUNet_preprocessed") / name / f"{PLANS}.json"
    marker = plans_file.parent / f".preprocessed_{configuration}.json"
    wanted = {"width_factor": width_factor, "raw_mtime": raw_json.stat().st_mtime}
    if batch_size is not None:  # absent when planned: markers of earlier runs stay valid
        wanted["batch_size"] = int(batch_size)
    if not force and marker.is_file() and read_json(marker) == wanted:
        logger.info("%s: plans and preprocessed data exist, skipped", name)
        return plans_file
    marker.unlink(missing_ok=True)
    extract_fingerprints([int(dataset_id)], num_processes=num_processes, check_dataset_integrity=True)
    plan_experiments([int(dataset_id)])
    if width_factor != 1.0:
        scale_network_width(plans_file, configuration, width_factor)
    if batch_size is not None:
        set_batch_size(plans_file, configuration, int(batch_size))
    preprocess([int(dataset_id)], PLANS, [configuration], [num_processes])
    write_json(marker, wanted)
    return plans_file


def scale_network_width(plans_file: Path, configuration: str, factor: float) -> None:
    """Multiply the features per stage of ``configuration`` in a plans file (in place, atomically)."""
    plans = read_json(plans_file)
    arch = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [max(4, int(round(f * factor))) for f in arch["features_per_stage"]]
    write_json(plans_file, plans)
    logger.info("%s: features per stage %s", configuration, arch["features_per_stage"])


def set_batch_size(plans_file: Path, configuration: str, batch_size: int) -> None:
    """Replace the planned batch size of ``configuration`` in a plans file (in place, atomically)."""
    plans = read_json(plans_file)
    planned = plans["configurations"][configuration]["batch_size"]
    plans["configurations"][configuration]["batch_size"] = int(batch_size)
    write_json(plans_file, plans)
    logger.info("%s: batch size %d (planned %d)", configuration, batch_size, planned)


def model_folder(dataset_id: int, configuration: str = "3d_fullres") -> Path:
    """nnU-Net's output folder for the default trainer and plans."""
    return nnunet_folder("nnUNet_results") / dataset_name(dataset_id) / f"{TRAINER}__{PLANS}__{configuration}"


def train(
    dataset_id: int,
    configuration: str = "3d_fullres",
    fold: int | str = "all",
    schedule: TrainingSchedule = TrainingSchedule(),
    device: str = "cpu",
    augmentation_processes: int | None = None,
) -> Path:
    """Train nnU-Net's default trainer with ``schedule``; returns the fold folder.

    Skipped when ``checkpoint_final.pth`` exists and ``training_settings.json`` holds these
    settings; a fold of other (or unrecorded) settings is removed and trained again. Resumes from
    ``checkpoint_latest.pth`` of the same settings.
    ``augmentation_processes`` sets ``nnUNet_n_proc_DA`` (0: augment in the training process).
    Only for training: nnU-Net's planner takes that variable as a thread count.
    """
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    name = dataset_name(dataset_id)
    fold = fold if fold == "all" else int(fold)
    fold_folder = model_folder(dataset_id, configuration) / f"fold_{fold}"
    record = fold_folder / TRAINING_RECORD
    wanted = training_settings(dataset_id, configuration, schedule)
    if fold_folder.is_dir():
        changed = _changed_settings(record, wanted)
        if changed:  # a model of other settings (or of unknown ones) is never kept as this one
            logger.warning("%s: %s was trained with other settings (%s); training again", name, fold_folder, changed)
            shutil.rmtree(fold_folder)
        elif (fold_folder / "checkpoint_final.pth").is_file():
            logger.info(
                "%s: %s exists with these settings, training skipped", name, fold_folder / "checkpoint_final.pth"
            )
            return fold_folder
    fold_folder.mkdir(parents=True, exist_ok=True)
    write_json(record, wanted)
    latest = fold_folder / "checkpoint_latest.pth"
    trainer = get_trainer_from_args(
        str(int(dataset_id)),
        configuration,
        fold,
        TRAINER,
        PLANS,
        continue_training=latest.is_file(),
        device=torch.device(device),
    )
    trainer.num_epochs = int(schedule.epochs)
    trainer.num_iterations_per_epoch = int(schedule.iterations_per_epoch)
    trainer.num_val_iterations_per_epoch = int(schedule.val_iterations_per_epoch)
    trainer.initial_lr = float(schedule.initial_lr)
    if schedule.optimizer == "adamw":
        # the trainer stays nnU-Net's own class (its predictor finds it by name); only its optimiser changes
        trainer.configure_optimizers = types.MethodType(_adamw_optimizers, trainer)
    # nnU-Net writes checkpoint_latest every 50 epochs; a short schedule would never resume without this
    trainer.save_every = min(trainer.save_every, max(1, int(schedule.epochs) // 10))
    if augmentation_processes is not None:
        os.environ["nnUNet_n_proc_DA"] = str(int(augmentation_processes))  # noqa: SIM112
    if latest.is_file():
        logger.info("%s: resuming from %s", name, latest)
        trainer.load_checkpoint(str(latest))
    if schedule.seed is not None:
        seed_everything(int(schedule.seed) + trainer.current_epoch)
    trainer.run_training()
    return fold_folder


#: The settings a fold folder was trained with (beside nnU-Net's checkpoints).
TRAINING_RECORD = "training_settings.json"
#: The model and inputs a prediction folder was made from.
PREDICTION_RECORD = ".prediction_settings.json"


def _file_stamp(path: Path) -> str:
    """sha256 of a file (``"absent"`` when there is none)."""
    return sha256_of(path) if path.is_file() else "absent"


def training_data_stamp(dataset_id: int) -> str:
    """sha256 over the raw dataset's training files (names and bytes): another set is another model."""
    import hashlib

    raw = nnunet_folder("nnUNet_raw") / dataset_name(dataset_id)
    digest = hashlib.sha256()
    for sub in ("imagesTr", "labelsTr"):
        for path in list_volumes(raw / sub) if (raw / sub).is_dir() else []:
            digest.update(f"{sub}/{path.name}:{_file_stamp(path)}\n".encode())
    return digest.hexdigest()


def training_settings(dataset_id: int, configuration: str, schedule: TrainingSchedule) -> dict[str, Any]:
    """What a trained fold depends on: the schedule, the plans (by hash) and the training files (by hash)."""
    plans = nnunet_folder("nnUNet_preprocessed") / dataset_name(dataset_id) / f"{PLANS}.json"
    return {
        "configuration": configuration, **dataclasses.asdict(schedule), "plans_sha256": _file_stamp(plans),
        "training_data_sha256": training_data_stamp(dataset_id),
    }  # fmt: skip


def _changed_settings(record: Path, wanted: dict[str, Any]) -> str:
    """``""`` when ``record`` holds ``wanted``; else which settings differ (``"no record"`` without one)."""
    if not record.is_file():
        return "no record of its settings"
    try:
        found = read_json(record)
    except InputError:
        return "an unreadable record"
    keys = sorted(set(found) | set(wanted))
    return ", ".join(f"{k} {found.get(k)!r} -> {wanted.get(k)!r}" for k in keys if found.get(k) != wanted.get(k))


def predict(
    dataset_id: int,
    input_folder: str | os.PathLike | None = None,
    output_folder: str | os.PathLike | None = None,
    configuration: str = "3d_fullres",
    fold: int | str = "all",
    device: str = "cpu",
    mirroring: bool = False,
    num_processes: int = 1,
) -> Path:
    """Segment every image of ``input_folder`` (default: the dataset's ``imagesTs``).

    Writes into a hidden temporary folder renamed to ``output_folder`` (default:
    ``<model folder>/predictions_Ts``) at the end. Skips the work when that folder exists and its
    record (``.prediction_settings.json``) names the same checkpoint, images and mirroring (by
    hash); otherwise predicts again and replaces it.
    """
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    name = dataset_name(dataset_id)
    input_folder = Path(input_folder or nnunet_folder("nnUNet_raw") / name / "imagesTs")
    if not input_folder.is_dir() or not list_volumes(input_folder):
        raise InputError(f"{input_folder}: no images to segment")
    folder = model_folder(dataset_id, configuration)
    output = Path(output_folder or folder / "predictions_Ts")
    fold = fold if fold == "all" else int(fold)
    wanted = {
        "checkpoint_sha256": _file_stamp(folder / f"fold_{fold}" / "checkpoint_final.pth"),
        "inputs": {p.name: _file_stamp(p) for p in list_volumes(input_folder)},
        "mirroring": bool(mirroring),
    }
    if output.is_dir():
        changed = _changed_settings(output / PREDICTION_RECORD, wanted)
        if not changed:
            logger.info("%s exists for this model and these images, prediction skipped", output)
            return output
        logger.warning("%s: made from another model or other images (%s); predicting again", output, changed[:200])
    partial = output.parent / f".{output.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=mirroring,
        perform_everything_on_device=torch.device(device).type == "cuda",
        device=torch.device(device),
        allow_tqdm=True,
    )
    predictor.initialize_from_trained_model_folder(
        str(folder), use_folds=(fold,), checkpoint_name="checkpoint_final.pth"
    )
    predictor.predict_from_files(
        str(input_folder),
        str(partial),
        save_probabilities=False,
        overwrite=True,
        num_processes_preprocessing=num_processes,
        num_processes_segmentation_export=num_processes,
    )
    write_json(partial / PREDICTION_RECORD, wanted)
    if output.is_dir():
        shutil.rmtree(output)
    partial.rename(output)
    return output


def train_segmentation(
    dataset_id: DatasetId,
    nnunet_root: str | os.PathLike | None = None,
    configuration: str = "3d_fullres",
    fold: Count | str = "all",
    epochs: Positive = 1000,
    iterations_per_epoch: Positive = 250,
    val_iterations_per_epoch: Positive = 50,
    initial_lr: PositiveFloat = 1e-2,
    optimizer: str = "sgd",
    seed: Count | None = None,
    width_factor: PositiveFloat = 1.0,
    batch_size: Positive | None = None,
    device: str = "cpu",
    predict_test: bool = True,
    num_processes: Positive = 2,
    augmentation_processes: Count | None = None,
) -> dict[str, Any]:
    """Plan + preprocess, train and (if the dataset has ``imagesTs``) predict its hold-out.

    Args:
        dataset_id: the dataset's id in ``nnUNet_raw``.
        nnunet_root: folder holding nnU-Net's three folders (default: nnU-Net's environment variables).
        configuration: nnU-Net configuration (``3d_fullres``, ``2d`` ...).
        fold: ``all`` (train on every case) or a cross-validation fold 0-4.
        epochs: training epochs (nnU-Net: 1000).
        iterations_per_epoch: training iterations per epoch (nnU-Net: 250).
        val_iterations_per_epoch: validation iterations per epoch (pseudo Dice; nnU-Net: 50).
        initial_lr: initial learning rate (nnU-Net's SGD: 1e-2; 3e-3 suits ``adamw``).
        optimizer: ``sgd`` (nnU-Net's default) or ``adamw`` (short CPU schedules).
        seed: seed of the network's initialisation, patch sampling and augmentation (repeatable
            CPU runs with ``augmentation_processes 0``); default: unseeded, as nnU-Net.
        width_factor: multiplies the planned features per stage (0.25 for CPU demos).
        batch_size: patches per iteration (default: nnU-Net's planned batch, which grows with
            the number of cases; fix it to compare sets of different sizes at equal compute).
        device: ``cpu`` or ``cuda``.
        predict_test: segment the dataset's ``imagesTs`` after training.
        num_processes: processes for fingerprinting, preprocessing and prediction.
        augmentation_processes: nnU-Net's augmentation workers (0: in the training process).

    Returns ``{"model": fold folder, "predictions": folder or None}``.
    """
    schedule = TrainingSchedule(
        int(epochs),
        int(iterations_per_epoch),
        int(val_iterations_per_epoch),
        float(initial_lr),
        str(optimizer),
        None if seed is None else int(seed),
        None if batch_size is None else int(batch_size),
    )  # validated before anything is written
    use_nnunet_root(nnunet_root)
    plan_and_preprocess(dataset_id, configuration, num_processes, width_factor, batch_size=schedule.batch_size)
    fold_folder = train(dataset_id, configuration, fold, schedule, device, augmentation_processes)
    predictions = None
    tests = nnunet_folder("nnUNet_raw") / dataset_name(dataset_id) / "imagesTs"
    if predict_test and tests.is_dir():
        predictions = predict(dataset_id, None, None, configuration, fold, device, num_processes=num_processes)
    return {"model": str(fold_folder), "predictions": None if predictions is None else str(predictions)}
