"""nnU-Net's learning curve on a validation split of the real training subjects (never the hold-out).

The schedule of the main command's segmenters (``SCALES``' ``nnunet_epochs``) is chosen from
this curve: the study's real training set is drawn as the study draws it, its last
``validation_subjects`` subjects are held back as validation cases, and nnU-Net is trained on
the others once per schedule (so each point has its own poly learning-rate decay, as a real run
of that length would), then scored on the validation cases. The hold-out of the study is never
drawn: the curve cannot have seen it (``split.json`` lists the subjects of both sides, and the
command refuses a split that shares a subject with the study's hold-out).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from shared.bounds import Positive
from shared.io import InputError, atomic_path, item_subject, read_datalist, write_csv, write_datalist, write_json
from shared.workflow.demo_recipes import parts_subjects
from shared.workflow.settings import STUDIES, StudySettings, resolve_settings

logger = logging.getLogger(__name__)

#: nnU-Net dataset ids of the learning curves (apart from the studies' 501-518).
CURVE_DATASET_IDS = {"ventricles": 901, "tumours": 911}
LABELS = {"ventricles": "ventricles", "tumours": "whole_tumour"}


def validation_split(subjects: Sequence[str], validation_subjects: int) -> tuple[list[str], list[str]]:
    """``(training, validation)`` subjects: the last ``validation_subjects`` are validation."""
    if not 1 <= validation_subjects < len(subjects):
        raise InputError(
            f"--validation_subjects {validation_subjects}: need at least 1 and fewer than the {len(subjects)} "
            "real training subjects"
        )
    return list(subjects[:-validation_subjects]), list(subjects[-validation_subjects:])


def split_real_set(
    settings: StudySettings, study: str, validation_subjects: int
) -> tuple[list[str], list[str], list[str]]:
    """The real set's subjects split for the curve, and the study's hold-out subjects (checked apart).

    Raises:
        InputError: the split would share a subject with the hold-out.
    """
    real = settings.brains if study == "ventricles" else settings.tumours
    training, validation = validation_split(real.all_subjects(), validation_subjects)
    holdout = parts_subjects(settings.holdout(study))
    shared = sorted(set(holdout) & (set(training) | set(validation)))
    if shared:
        raise InputError(f"learning curve: subject {shared[0]} is in the study's hold-out")
    return training, validation, holdout


def _write_real_set(settings: StudySettings, study: str, folder: Path) -> Path:
    real = settings.brains if study == "ventricles" else settings.tumours
    return real.write(folder)


def learning_curve(
    study: str,
    output_dir: str | os.PathLike = "outputs/learning_curve",
    scale: str = "study",
    iterations: Sequence[Positive] = (100, 200, 300, 400, 600),
    validation_subjects: Positive = 5,
    device: str = "cpu",
) -> Path:
    """Hold-out-free learning curve of the study's nnU-Net; returns ``learning_curve.md``.

    Args:
        study: ``ventricles`` or ``tumours``.
        output_dir: where the data, nnU-Net folders and results go.
        scale: the scale whose real set, optimiser, learning rate and width are used (``demo`` / ``study``).
        iterations: training iterations of each point (multiples of the scale's iterations per epoch).
        validation_subjects: real subjects held back as validation cases (the last ones).
        device: ``cpu`` or ``cuda``.

    Writes ``split.json`` (training and validation subjects), ``learning_curve.csv`` (per
    schedule: mean, SD, min of the validation Dice), ``learning_curve.md`` and ``learning_curve.png``.
    """
    from shared.evaluation.segmentation_metrics import evaluate_models
    from shared.segmentation.nnunet_dataset import assemble_dataset, dataset_id_of
    from shared.workflow.stages import prediction_folder, train_nnunet

    if study not in STUDIES:
        raise InputError(f"study: unknown '{study}', expected one of {', '.join(STUDIES)}")
    settings = resolve_settings(scale)
    base = settings.schedule(study)
    steps = [int(n) for n in iterations]
    bad = [n for n in steps if n < base.iterations_per_epoch or n % base.iterations_per_epoch]
    if not steps or bad:
        raise InputError(
            f"--iterations: multiples of {base.iterations_per_epoch} (iterations per epoch), got {bad or steps}"
        )
    training, validation, _ = split_real_set(settings, study, int(validation_subjects))
    output_dir = Path(output_dir).resolve()
    datalist = _write_real_set(settings, study, output_dir / "data")
    items = read_datalist(datalist)
    by_subject = {item_subject(item): item for item in items}
    split_dir = output_dir / "split"
    sections = {}
    for name, subjects in (("training", training), ("validation", validation)):
        chosen = [by_subject[s] for s in subjects]
        for item in chosen:
            for key in ("image", "label"):
                item[key] = os.path.relpath(item[key], split_dir)
        sections[name] = write_datalist(split_dir / f"{name}.json", {"training": chosen})
    write_json(
        output_dir / "split.json", {"study": study, "scale": scale, "training": training, "validation": validation}
    )
    nnunet_root = output_dir / "nnunet"
    dataset = assemble_dataset(
        "real", CURVE_DATASET_IDS[study], f"Curve{study.capitalize()}", sections["training"], None,
        sections["validation"], labels=LABELS[study], nnunet_raw=nnunet_root / "nnUNet_raw", overwrite=True,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    for total in steps:
        schedule = replace(base, epochs=total // base.iterations_per_epoch)
        results = nnunet_root / f"nnUNet_results_{total}_iterations"
        train_nnunet(
            dataset_id_of(dataset), nnunet_root, schedule, settings.nnunet_width, device, settings.seed, results
        )
        predictions = prediction_folder(results, dataset)
        summary = evaluate_models(
            {f"{total}": predictions}, dataset / "labelsTs", output_dir / "evaluation" / str(total)
        )
        dice = next(r for r in summary if r["subset"] == "all")
        rows.append({"iterations": total, "epochs": schedule.epochs, "dice_mean": dice["dice_mean"],
                     "dice_sd": dice["dice_sd"], "cases": dice["n"]})  # fmt: skip
        logger.info("learning curve %s: %d iterations, validation Dice %.3f", study, total, dice["dice_mean"])
    write_csv(output_dir / "learning_curve.csv", rows)
    save_learning_curve_plot(output_dir / "learning_curve.png", rows, study)
    lines = [
        f"# nnU-Net learning curve: {study} ({scale} scale's real set)",
        "",
        f"{len(training)} training subjects, {len(validation)} validation subjects (`split.json`); the study's",
        f"hold-out is never drawn. {base.optimizer}, lr {base.initial_lr:g}, width {settings.nnunet_width:g}, "
        f"seed {settings.seed}.",
        "",
        "| iterations | validation Dice (mean ± SD) |",
        "|---|---|",
        *(f"| {r['iterations']} | {r['dice_mean']:.3f} ± {r['dice_sd']:.3f} |" for r in rows),
        "",
        "![learning curve](learning_curve.png)",
        "",
    ]
    path = output_dir / "learning_curve.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


def save_learning_curve_plot(path: Path, rows: list[dict[str, Any]], study: str) -> None:
    """Validation Dice (mean ± SD) against training iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared.viz import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = np.array([r["iterations"] for r in rows])
    mean = np.array([float(r["dice_mean"]) for r in rows])
    sd = np.array([float(r["dice_sd"] or 0) for r in rows])
    ax.errorbar(x, mean, yerr=sd, marker="o", capsize=3)
    ax.set_xlabel("training iterations")
    ax.set_ylabel("validation Dice")
    ax.set_ylim(0, 1)
    ax.set_title(f"nnU-Net on the real {study}: validation split")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
