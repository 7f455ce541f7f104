"""Pictures: mosaics of images with label outlines, summary plots of conditions and segmentation errors."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

from shared.io import atomic_path


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write ``fig`` as a PNG atomically (temp file + rename) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


@dataclass(frozen=True)
class MosaicCase:
    """One row of a mosaic.

    Attributes:
        image: ``(X, Y, Z)`` intensities.
        labels: ``(X, Y, Z)`` integer labels (0 = background, not outlined).
        spacing: voxel size (mm) per axis, for correct aspect ratios.
        title: row caption.
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    title: str


def _label_colours(labels: np.ndarray) -> dict[int, np.ndarray]:
    ids = [int(v) for v in np.unique(labels) if v != 0]
    cmap = plt.get_cmap("tab20")
    if len(ids) == 1:
        return {ids[0]: np.array([1.0, 0.2, 0.2])}
    return {label_id: np.asarray(cmap(i % 20)[:3]) for i, label_id in enumerate(ids)}


def _outlined(
    image_slice: np.ndarray, label_slice: np.ndarray, colours: dict[int, np.ndarray], vmax: float
) -> np.ndarray:
    """RGB ``(H, W, 3)`` of a grey slice with each label's boundary drawn in its colour."""
    grey = np.clip(image_slice / max(vmax, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    edges = find_boundaries(label_slice, mode="inner") & (label_slice > 0)
    for label_id, colour in colours.items():
        rgb[edges & (label_slice == label_id)] = colour
    return rgb


#: Label ids whose centroid the ``"ventricles"`` focus slices through (left lateral ventricle).
#: Panels in a generation mosaic.
MOSAIC_CASES = 4

_VENTRICLE_FOCUS_IDS = (4,)


def _focus_voxel(labels: np.ndarray, focus: str) -> tuple[int, int, int]:
    """Voxel the three slices pass through.

    ``"centre"``: the grid centre; ``"labels"``: centroid of all labelled voxels (e.g. a
    tumour); ``"ventricles"``: centroid of the left lateral ventricle. Falls back to the
    grid centre when the region is empty.
    """
    if focus not in ("centre", "labels", "ventricles"):
        raise ValueError(f"mosaic focus must be 'centre', 'labels' or 'ventricles', got {focus!r}")
    region = labels > 0 if focus == "labels" else np.isin(labels, _VENTRICLE_FOCUS_IDS)
    nonzero = np.nonzero(region) if focus != "centre" else (np.array([]),)
    if not nonzero[0].size:
        return tuple(n // 2 for n in labels.shape)  # type: ignore[return-value]
    return tuple(int(np.round(axis.mean())) for axis in nonzero)  # type: ignore[return-value]


def save_label_mosaic(path: str | os.PathLike, cases: Sequence[MosaicCase], focus: str = "centre") -> None:
    """Axial, coronal and sagittal slices of each case with label outlines, one row per case.

    Args:
        path: PNG to write (atomically).
        cases: the rows.
        focus: where the slices cross, see :func:`_focus_voxel`.
    """
    fig, axes = plt.subplots(len(cases), 3, figsize=(9, 3.1 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        colours = _label_colours(case.labels)
        vmax = float(np.percentile(case.image, 99.5))
        cx, cy, cz = _focus_voxel(case.labels, focus)
        sx, sy, sz = case.spacing
        views = (
            ("axial", case.image[:, :, cz].T, case.labels[:, :, cz].T, sy / sx),
            ("coronal", case.image[:, cy, :].T, case.labels[:, cy, :].T, sz / sx),
            ("sagittal", case.image[cx, :, :].T, case.labels[cx, :, :].T, sz / sy),
        )
        for ax, (name, image_slice, label_slice, aspect) in zip(row, views):
            ax.imshow(_outlined(image_slice, label_slice, colours, vmax), origin="lower", aspect=aspect)
            ax.set_title(f"{case.title} - {name}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def save_conditions_summary(
    path: str | os.PathLike,
    ventricle_rows: Sequence[dict],
    tumour_rows: Sequence[dict],
    enlargements: Sequence[float] | None = None,
) -> None:
    """One PNG summarising the conditioning tables of a dataset pair.

    Top row (ventricles): volume histogram; ventricle ratio against the generator's
    enlargement when ``enlargements`` (one per ventricle row) is given, else against ICV;
    histogram of ``c``. Bottom row (tumours): volume histogram (mL); sphericity against
    volume; tumour centres in the axial plane, marker size by volume.
    """
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    ventricle_ml = np.array([float(r["ventricle_ml"]) for r in ventricle_rows])
    ratio = np.array([float(r["ratio"]) for r in ventricle_rows])
    c = np.array([float(r["c"]) for r in ventricle_rows if r.get("c", "") != ""])
    axes[0, 0].hist(ventricle_ml, bins=12, color="tab:blue")
    axes[0, 0].set(title="Ventricle volume", xlabel="mL", ylabel="cases")
    if enlargements is not None:
        axes[0, 1].scatter(enlargements, ratio * 100, color="tab:blue")
        axes[0, 1].set(
            title="Ventricle ratio vs enlargement", xlabel="enlargement (volume factor)", ylabel="ventricles / ICV (%)"
        )
    else:
        axes[0, 1].scatter([float(r["icv_ml"]) for r in ventricle_rows], ratio * 100, color="tab:blue")
        axes[0, 1].set(title="Ventricle ratio vs ICV", xlabel="ICV (mL)", ylabel="ventricles / ICV (%)")
    axes[0, 2].hist(c, bins=10, range=(0, 1), color="tab:blue")
    axes[0, 2].set(title="Condition c (min-max of ratio)", xlabel="c", ylabel="cases")

    volume_ml = np.array([float(r["volume_ml"]) for r in tumour_rows])
    axes[1, 0].hist(volume_ml, bins=12, color="tab:red")
    axes[1, 0].set(title="Tumour volume", xlabel="mL", ylabel="cases")
    axes[1, 1].scatter(volume_ml, [float(r["sphericity"]) for r in tumour_rows], color="tab:red")
    axes[1, 1].set(title="Sphericity vs volume", xlabel="mL", ylabel="sphericity", ylim=(0, 1.05))
    sizes = 20 + 200 * np.array([float(r["volume"]) for r in tumour_rows])
    axes[1, 2].scatter(
        [float(r["centre_x"]) for r in tumour_rows],
        [float(r["centre_y"]) for r in tumour_rows],
        s=sizes,
        color="tab:red",
        alpha=0.6,
    )
    axes[1, 2].set(
        title="Tumour centres (axial)",
        xlabel="centre x (fraction of grid)",
        ylabel="centre y",
        xlim=(0, 1),
        ylim=(0, 1),
        aspect="equal",
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


# ----------------------------------------------------------------------------- segmentation evaluation


def save_error_plot(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], models: Sequence[str], volume_threshold_ml: float
) -> None:
    """PNG: absolute volume error per model (box plot with every case as a point) and against truth volume."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    rng = np.random.default_rng(0)
    for index, model in enumerate(models):
        model_rows = [r for r in rows if r["model"] == model]
        errors = np.array([float(r["abs_volume_error_ml"]) for r in model_rows])
        truth = np.array([float(r["truth_ml"]) for r in model_rows])
        colour = plt.get_cmap("tab10")(index % 10)
        left.boxplot(errors, positions=[index], widths=0.5, showfliers=False)
        left.scatter(index + rng.uniform(-0.15, 0.15, errors.size), errors, s=14, color=colour, alpha=0.8, zorder=3)
        right.scatter(truth, errors, s=16, color=colour, alpha=0.8, label=model)
    left.set_xticks(range(len(models)), list(models), rotation=25, ha="right")  # long names must not overlap
    left.set(title="Absolute volume error per model", ylabel="|predicted - truth| (mL)")
    right.axvline(volume_threshold_ml, color="grey", linestyle="--", linewidth=1, label=f"{volume_threshold_ml:g} mL")
    right.set(title="Error against ground-truth volume", xlabel="truth volume (mL)", ylabel="absolute error (mL)")
    right.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def save_training_volume_plot(
    path: str | os.PathLike,
    training_volumes: Mapping[str, Sequence[float]],
    volume_threshold_ml: float,
    test_volumes: Sequence[float] | None = None,
) -> None:
    """PNG: violin plot of the training-set volumes (mL) per variant, the test truth volumes beside them."""
    groups = {name: np.asarray(values, dtype=np.float64) for name, values in training_volumes.items()}
    if test_volumes is not None:
        groups["test (truth)"] = np.asarray(test_volumes, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 2), 4.5))
    rng = np.random.default_rng(0)
    for index, (name, values) in enumerate(groups.items()):
        colour = "grey" if name == "test (truth)" else plt.get_cmap("tab10")(index % 10)
        if np.unique(values).size > 1:  # a KDE needs spread
            parts = ax.violinplot(values, positions=[index], widths=0.8, showmedians=True)
            for body in parts["bodies"]:
                body.set_facecolor(colour)
                body.set_alpha(0.4)
            for key in ("cbars", "cmins", "cmaxes", "cmedians"):
                parts[key].set_color(colour)
        ax.scatter(index + rng.uniform(-0.08, 0.08, values.size), values, s=8, color=colour, zorder=3)
    ax.axhline(volume_threshold_ml, color="grey", linestyle="--", linewidth=1, label=f"{volume_threshold_ml:g} mL")
    ax.legend(fontsize=8)
    ax.set_xticks(range(len(groups)), [f"{name}\n(n={values.size})" for name, values in groups.items()])
    ax.set(title="Training-set volumes per variant", ylabel="volume (mL)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def save_bland_altman_plot(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], models: Sequence[str]) -> None:
    """PNG: Bland-Altman of predicted against true volume, one panel per model.

    ``rows``: per-case rows with ``model``, ``pred_ml`` and ``truth_ml`` (several seeds of a
    model are all drawn). x: mean of predicted and true volume; y: predicted - true; lines:
    the mean difference (bias) and the 95% limits of agreement (bias +- 1.96 SD).
    """
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models) + 0.6, 3.8), sharey=True, squeeze=False)
    for index, (ax, model) in enumerate(zip(axes[0], models)):
        model_rows = [r for r in rows if r["model"] == model]
        pred = np.array([float(r["pred_ml"]) for r in model_rows])
        truth = np.array([float(r["truth_ml"]) for r in model_rows])
        difference, mean = pred - truth, (pred + truth) / 2
        bias = float(difference.mean()) if difference.size else 0.0
        spread = 1.96 * float(difference.std(ddof=1)) if difference.size > 1 else 0.0
        ax.scatter(mean, difference, s=12, color=plt.get_cmap("tab10")(index % 10), alpha=0.8)
        ax.axhline(bias, color="black", linewidth=1, label=f"bias {bias:+.1f} mL")
        for limit in (bias - spread, bias + spread):
            ax.axhline(limit, color="grey", linestyle="--", linewidth=1)
        ax.set(title=f"{model} (n={difference.size})", xlabel="(predicted + true) / 2 (mL)")
        ax.legend(fontsize=7, loc="best", title=f"limits ±{spread:.1f} mL", title_fontsize=7)
    axes[0][0].set_ylabel("predicted - true (mL)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def mosaic_indices(c_values: Sequence[float], count: int = MOSAIC_CASES) -> list[int]:
    """Indices of up to ``count`` samples spread evenly over the sorted ``c`` values (smallest first)."""
    order = np.argsort(np.asarray(c_values, dtype=np.float64), kind="stable")
    if len(order) == 0:
        return []
    picks = np.unique(np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int))
    return [int(order[k]) for k in picks]
