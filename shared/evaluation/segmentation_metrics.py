"""Segmentation evaluation: Dice, IoU and volume error of any segmenter's predictions against ground truth.

Works on a folder of predicted label maps per model (nnU-Net, MONAI, another tool's outputs),
matched to the ground truth by case name (file name without ``.nii`` / ``.nii.gz`` / ``.mgz``).
Per case: Dice, IoU, truth and predicted volume (mL), signed and absolute volume error; per
model: mean and sample SD of each for all cases and split by ground-truth volume; pictures of
the errors per model and of the training-set volumes per variant.

The overlap metrics are plain numpy on binary masks: for one foreground they are two voxel
counts, and ``monai.metrics.compute_dice`` / ``compute_iou`` would need one-hot batched tensors
and a MONAI import (~10 s per process on this CPU), too slow for a light command-line tool.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from shared.bounds import Count, PositiveFloat
from shared.conditioning.features import mask_volume_ml
from shared.io import (
    VOLUME_SUFFIXES,
    InputError,
    Volume,
    atomic_path,
    check_same_grid,
    list_volumes,
    load_label_map,
    resolve_volume_inputs,
    write_csv,
)

logger = logging.getLogger(__name__)

#: Per-case metrics, in column order (``volume_error_ml`` = predicted - truth).
CASE_METRICS: tuple[str, ...] = ("dice", "iou", "truth_ml", "pred_ml", "abs_volume_error_ml", "volume_error_ml")
CASE_COLUMNS: tuple[str, ...] = ("case", *CASE_METRICS)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model",
    "subset",
    "n",
    *(f"{metric}_{stat}" for metric in CASE_METRICS for stat in ("mean", "sd")),
)

Labels = int | Sequence[int] | None


# ----------------------------------------------------------------------------- metrics


def foreground(mask: np.ndarray, labels: Labels = None) -> np.ndarray:
    """Boolean foreground of a mask, same shape.

    Args:
        mask: ``(X, Y, Z)`` (any shape) boolean or integer mask / label map.
        labels: label values that count as foreground (one int or several); ``None``: any value ``> 0``.
    """
    mask = np.asarray(mask)
    if labels is None:
        return mask > 0
    return np.isin(mask, np.atleast_1d(np.asarray(labels)))


def _overlap_counts(pred: np.ndarray, truth: np.ndarray, labels: Labels) -> tuple[int, int, int]:
    """``(|P|, |T|, |P and T|)`` voxel counts of the foregrounds of two same-shape masks."""
    pred_fg, truth_fg = foreground(pred, labels), foreground(truth, labels)
    if pred_fg.shape != truth_fg.shape:
        raise ValueError(f"prediction shape {pred_fg.shape} differs from truth shape {truth_fg.shape}")
    return int(np.count_nonzero(pred_fg)), int(np.count_nonzero(truth_fg)), int(np.count_nonzero(pred_fg & truth_fg))


def dice(pred: np.ndarray, truth: np.ndarray, labels: Labels = None) -> float:
    """Dice coefficient ``2 |P and T| / (|P| + |T|)`` of two masks of one shape (e.g. ``(X, Y, Z)``).

    Foreground is ``value > 0``, or membership of ``labels`` when given. **Both empty gives 1.0**
    (the prediction agrees perfectly that there is nothing), so such cases count as perfect in
    means rather than being dropped as NaN (MONAI's ``ignore_empty`` and nnU-Net report NaN).
    """
    n_pred, n_truth, n_both = _overlap_counts(pred, truth, labels)
    return 1.0 if n_pred + n_truth == 0 else 2.0 * n_both / (n_pred + n_truth)


def iou(pred: np.ndarray, truth: np.ndarray, labels: Labels = None) -> float:
    """Intersection over union (Jaccard) ``|P and T| / |P or T|`` of two same-shape masks; both empty gives 1.0.

    Foreground as in :func:`dice`.
    """
    n_pred, n_truth, n_both = _overlap_counts(pred, truth, labels)
    union = n_pred + n_truth - n_both
    return 1.0 if union == 0 else n_both / union


def volume_ml(mask: np.ndarray, affine: np.ndarray, labels: Labels = None) -> float:
    """Foreground volume in mL of an ``(X, Y, Z)`` mask with its ``(4, 4)`` affine (voxels x voxel volume)."""
    return mask_volume_ml(foreground(mask, labels), affine)


def _case_metrics(pred: Volume, truth: Volume, labels: Labels) -> dict[str, float]:
    """The :data:`CASE_METRICS` of a prediction against its truth (same grid, checked by the caller)."""
    truth_ml, pred_ml = volume_ml(truth.array, truth.affine, labels), volume_ml(pred.array, pred.affine, labels)
    return {
        "dice": dice(pred.array, truth.array, labels),
        "iou": iou(pred.array, truth.array, labels),
        "truth_ml": truth_ml,
        "pred_ml": pred_ml,
        "abs_volume_error_ml": abs(pred_ml - truth_ml),
        "volume_error_ml": pred_ml - truth_ml,
    }


def _compare(pred_path: str | os.PathLike, truth: Volume, labels: Labels) -> dict[str, float]:
    pred = load_label_map(pred_path)
    check_same_grid(truth, pred)
    return _case_metrics(pred, truth, labels)


def evaluate_case(pred_path: str | os.PathLike, truth_path: str | os.PathLike, labels: Labels = None) -> dict[str, Any]:
    """Metrics of one predicted label map against its ground truth.

    Returns:
        ``{"case", "dice", "iou", "truth_ml", "pred_ml", "abs_volume_error_ml", "volume_error_ml"}``;
        ``case`` is the truth file's name without its volume suffix, ``volume_error_ml`` is
        predicted minus truth.

    Raises:
        InputError: unreadable or invalid label maps; prediction not on the truth's grid (names
            the prediction file).
    """
    truth = load_label_map(truth_path)
    return {"case": case_name(truth_path), **_compare(pred_path, truth, labels)}


# ----------------------------------------------------------------------------- inputs


class CasePair(NamedTuple):
    """One case to evaluate: its name, prediction file and ground-truth file."""

    case: str
    prediction: Path
    truth: Path


def case_name(path: str | os.PathLike) -> str:
    """File name without its volume suffix (``.nii.gz``, ``.nii``, ``.mgz``; any case)."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _by_case(files: Iterable[Path], source: str | os.PathLike) -> dict[str, Path]:
    """Files keyed by case name; two files of one case name are an error naming ``source``."""
    cases: dict[str, Path] = {}
    for path in files:
        name = case_name(path)
        if name in cases:
            raise InputError(f"{source}: two files for case '{name}' ({cases[name].name}, {path.name})")
        cases[name] = Path(path)
    return cases


def _shown(names: Sequence[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def match_cases(pred_folder: str | os.PathLike, truth_source: str | os.PathLike) -> list[CasePair]:
    """Pair every ground-truth label map with the prediction of the same case name.

    Args:
        pred_folder: folder of predicted label maps (other files, e.g. nnU-Net's ``plans.json``,
            are ignored).
        truth_source: folder of label maps, a datalist JSON (the ``label`` of every item in every
            section that has labels) or one label file.

    Returns:
        One :class:`CasePair` per truth, in truth order. Predictions without a truth are
        ignored with a logged warning.

    Raises:
        InputError: a truth has no prediction (names the case(s)); two files of one case name.
    """
    truths = _by_case(resolve_volume_inputs(truth_source, key="label"), truth_source)
    predictions = _by_case(list_volumes(pred_folder), pred_folder)
    missing = [name for name in truths if name not in predictions]
    if missing:
        raise InputError(f"{pred_folder}: no prediction for case(s) {_shown(missing)} of {truth_source}")
    extra = [name for name in predictions if name not in truths]
    if extra:
        logger.warning("%s: %d prediction(s) without ground truth ignored: %s", pred_folder, len(extra), _shown(extra))
    return [CasePair(name, predictions[name], truth) for name, truth in truths.items()]


def label_volumes_ml(folder_or_datalist: str | os.PathLike, labels: Labels = None) -> list[float]:
    """Foreground volume (mL) of every label map of a folder (e.g. nnU-Net ``labelsTr``), datalist or file.

    From a datalist, the ``label`` of every item of every labelled section is used.
    """
    files = resolve_volume_inputs(folder_or_datalist, key="label")
    volumes = []
    for path in tqdm(files, desc=f"volumes {Path(folder_or_datalist).name}", unit="file", disable=None):
        volume = load_label_map(path)
        volumes.append(volume_ml(volume.array, volume.affine, labels))
    return volumes


# ----------------------------------------------------------------------------- summaries


def _mean_sd(values: Sequence[float]) -> tuple[float | str, float | str]:
    """Mean and sample SD (ddof=1; one value: SD 0); ``("", "")`` for no values."""
    if not values:
        return "", ""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def _above(row: Mapping[str, Any], volume_threshold_ml: float) -> bool:
    """Truth volume above the threshold, at 1e-6 mL resolution (a voxel volume's float noise never tips it)."""
    return round(float(row["truth_ml"]), 6) > volume_threshold_ml


def subset_names(volume_threshold_ml: float) -> tuple[str, str, str]:
    """Names of the summary subsets: all cases, truth above the threshold, truth at or below it."""
    return "all", f"truth > {volume_threshold_ml:g} mL", f"truth <= {volume_threshold_ml:g} mL"


def summarise(rows: Sequence[Mapping[str, Any]], volume_threshold_ml: float = 150.0) -> list[dict[str, Any]]:
    """Mean and sample SD of every per-case metric, per model, for all cases and by truth volume.

    Args:
        rows: per-case rows (:func:`evaluate_case`), optionally with a ``model`` key; rows are
            grouped by model in order of first appearance (no key: one group, model ``""``).
        volume_threshold_ml: cases with ``truth_ml > threshold`` form one subset, the rest the other.

    Returns:
        Per model three rows (:func:`subset_names`) with ``model``, ``subset``, ``n`` and
        ``<metric>_mean`` / ``<metric>_sd`` for each of :data:`CASE_METRICS`. SD is the sample SD
        (ddof=1), 0 for one case; an empty subset has ``n = 0`` and blank (``""``) statistics.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("model", "")), []).append(row)
    names = subset_names(volume_threshold_ml)
    summary = []
    for model, group in groups.items():
        above = [r for r in group if _above(r, volume_threshold_ml)]
        below = [r for r in group if not _above(r, volume_threshold_ml)]
        for subset, members in zip(names, (group, above, below)):
            out: dict[str, Any] = {"model": model, "subset": subset, "n": len(members)}
            for metric in CASE_METRICS:
                out[f"{metric}_mean"], out[f"{metric}_sd"] = _mean_sd([float(r[metric]) for r in members])
            summary.append(out)
    return summary


def _pm(row: Mapping[str, Any], metric: str, digits: int) -> str:
    mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
    return "-" if mean == "" else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def summary_markdown(
    summary: Sequence[Mapping[str, Any]], truth: str, volume_threshold_ml: float, training_plot: bool = False
) -> str:
    """The summary as a Markdown table (model, subset, n, Dice, IoU, MAE mL; mean ± SD), with the pictures."""
    lines = [
        "# Segmentation evaluation",
        "",
        f"Ground truth: `{truth}`. Volume threshold: {volume_threshold_ml:g} mL. Mean ± sample SD over cases;",
        "MAE = mean absolute volume error.",
        "",
        "| model | subset | n | Dice | IoU | MAE (mL) |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary:
        cells = [row["model"], row["subset"], row["n"], _pm(row, "dice", 3), _pm(row, "iou", 3),
                 _pm(row, "abs_volume_error_ml", 1)]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "![absolute volume error per model](errors.png)", ""]
    if training_plot:
        lines += ["![training-set volumes per variant](training_volumes.png)", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- whole evaluation


def _rounded(rows: Sequence[Mapping[str, Any]], digits: int = 6) -> list[dict[str, Any]]:
    """Rows with floats rounded for the CSV files (drops float noise such as ``200.00000000000014`` mL)."""
    return [{k: round(v, digits) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def evaluate_models(
    models: Mapping[str, str | os.PathLike],
    truth: str | os.PathLike,
    output_dir: str | os.PathLike,
    volume_threshold_ml: float = 150.0,
    labels: Labels = None,
    training_volumes: Mapping[str, Sequence[float]] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate each model's prediction folder against one ground truth; write tables and pictures.

    Every model must have a prediction for every truth case (checked for all models before any
    volume is read). Each truth is read once and compared with every model's prediction.

    Args:
        models: model name -> folder of predicted label maps.
        truth: folder of label maps, datalist JSON (``label`` key) or one file.
        output_dir: where the outputs go (created).
        volume_threshold_ml: split of the summary by ground-truth volume.
        labels: label values counted as foreground; ``None``: any value ``> 0``.
        training_volumes: variant name -> training-set volumes (mL), e.g. from
            :func:`label_volumes_ml`; adds ``training_volumes.png``.

    Writes (atomically) ``per_case.csv`` (``model`` + :data:`CASE_COLUMNS`), ``summary.csv``
    (:data:`SUMMARY_COLUMNS`), ``summary.md``, ``errors.png`` and, with training volumes,
    ``training_volumes.png``.

    Returns:
        The summary rows (:func:`summarise`).
    """
    if not models:
        raise InputError("--predictions: no prediction folder given")
    pairs = {model: match_cases(folder, truth) for model, folder in models.items()}
    cases = next(iter(pairs.values()))
    rows: dict[str, list[dict[str, Any]]] = {model: [] for model in models}
    for index, case in enumerate(tqdm(cases, desc="evaluate cases", unit="case", disable=None)):
        truth_volume = load_label_map(case.truth)
        for model, model_pairs in pairs.items():
            metrics = _compare(model_pairs[index].prediction, truth_volume, labels)
            rows[model].append({"model": model, "case": case.case, **metrics})
    per_case = [row for model in models for row in rows[model]]
    if labels is not None and not any(row["truth_ml"] > 0 or row["pred_ml"] > 0 for row in per_case):
        raise InputError(
            f"--labels {','.join(str(v) for v in np.atleast_1d(labels))}: in no truth and no prediction "
            "(every Dice would be 1.0); check the label values"
        )
    summary = summarise(per_case, volume_threshold_ml)
    output_dir = Path(output_dir)
    write_csv(output_dir / "per_case.csv", _rounded(per_case), ("model", *CASE_COLUMNS))
    write_csv(output_dir / "summary.csv", _rounded(summary), SUMMARY_COLUMNS)
    with atomic_path(output_dir / "summary.md") as tmp:
        tmp.write_text(summary_markdown(summary, str(truth), volume_threshold_ml, bool(training_volumes)))
    from shared.viz import save_error_plot, save_training_volume_plot  # matplotlib only when plotting

    save_error_plot(output_dir / "errors.png", per_case, list(models), volume_threshold_ml)
    if training_volumes:
        test_volumes = [row["truth_ml"] for row in rows[next(iter(models))]]
        save_training_volume_plot(
            output_dir / "training_volumes.png", training_volumes, volume_threshold_ml, test_volumes
        )
    logger.info("segmentation evaluation of %d model(s) on %d case(s) in %s", len(models), len(cases), output_dir)
    return summary


# ----------------------------------------------------------------------------- command line


def _label_set(labels: Any) -> tuple[int, ...] | None:
    """``--labels`` as a tuple of ints (``1``, ``1,2``, ``[1, 2]``) or ``None``."""
    if labels is None:
        return None
    values = labels if isinstance(labels, (list, tuple)) else str(labels).split(",")
    try:
        parsed = tuple(int(v) for v in values)
    except (TypeError, ValueError) as error:
        raise InputError(f"--labels: expected integer label values, got {labels!r}") from error
    if not parsed or any(v < 0 for v in parsed):
        raise InputError(f"--labels: expected non-negative integer label values, got {labels!r}")
    return parsed


def _prediction_folders(predictions: Any) -> dict[str, str]:
    """``--predictions`` as model name -> folder: a dict, or one folder / a list of folders (named by folder)."""
    if isinstance(predictions, Mapping):
        return {str(name): str(folder) for name, folder in predictions.items()}
    folders = list(predictions) if isinstance(predictions, (list, tuple)) else [predictions]
    models: dict[str, str] = {}
    for folder in folders:
        name = Path(str(folder)).resolve().name
        if name in models:
            raise InputError(f"{folder}: two prediction folders named '{name}'; name them with a dict")
        models[name] = str(folder)
    return models


def _training_volumes(training: Mapping[str, Any] | None, labels: Labels) -> dict[str, list[float]] | None:
    """``--training`` (variant -> label folder / datalist, or a list of volumes in mL) as volumes per variant."""
    if training is None:
        return None
    if not isinstance(training, Mapping):
        raise InputError(f"--training: expected a dict of variant -> label folder or datalist, got {training!r}")
    return {
        str(variant): [float(v) for v in source]
        if isinstance(source, (list, tuple))
        else label_volumes_ml(source, labels)
        for variant, source in training.items()
    }


def evaluate_segmentation(
    truth: str,
    predictions: str | Mapping[str, str],
    output_dir: str,
    volume_threshold_ml: PositiveFloat = 150.0,
    labels: Count | Sequence[Count] | None = None,
    training: Mapping[str, Any] | None = None,
) -> str:
    """Dice, IoU and volume error of one or more segmenters' predictions against ground-truth label maps.

    Args:
        truth: folder of ground-truth label maps (e.g. nnU-Net ``labelsTs``), datalist JSON or one file.
        predictions: ``"{'name': 'folder', ...}"``, or one folder (model name = folder name).
        output_dir: where per_case.csv, summary.csv, summary.md, errors.png (and training_volumes.png) go.
        volume_threshold_ml: summary split: cases with truth volume above / at or below this.
        labels: label value(s) counted as foreground (``1`` or ``1,2``); default any value > 0.
        training: ``"{'variant': 'labelsTr folder or datalist', ...}"`` for the training-volume violin plot.

    Returns:
        The path of ``summary.md`` (printed by fire).
    """
    try:
        threshold = float(volume_threshold_ml)
    except (TypeError, ValueError) as error:
        raise InputError(f"--volume_threshold_ml: expected a number, got {volume_threshold_ml!r}") from error
    if not math.isfinite(threshold) or threshold < 0:
        raise InputError(f"--volume_threshold_ml: expected a non-negative number, got {volume_threshold_ml!r}")
    label_set = _label_set(labels)
    evaluate_models(
        _prediction_folders(predictions),
        truth,
        output_dir,
        threshold,
        label_set,
        _training_volumes(training, label_set),
    )
    return str(Path(output_dir) / "summary.md")
