"""Does a generated image have the right contrast? Mean intensity per tissue, generated against real.

Both sets of images are put on the same scale as the SPADE bundle's training data (0.5 / 99.5
percentiles -> [0, 1], clipped), then each tissue's mean intensity is taken per volume under
its label map. In FLAIR, for instance, the ventricles and CSF are darker than white matter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from shared.io import InputError, load_pair, read_csv, read_datalist, write_csv
from shared.labels import SYNTHSEG_LABEL_IDS, VENTRICLE_LABEL_IDS
from shared.viz import save_figure

#: Tissues reported, as groups of FreeSurfer/SynthSeg ids.
TISSUES: dict[str, tuple[int, ...]] = {
    "white matter": (2, 41, 7, 46),
    "cortex": (3, 42, 8, 47),
    "deep grey matter": (10, 11, 12, 13, 17, 18, 26, 28, 49, 50, 51, 52, 53, 54, 58, 60),
    "brain stem": (16,),
    "ventricles": VENTRICLE_LABEL_IDS,
    "csf": (24,),
}
COLUMNS = ("tissue", "real_mean", "real_sd", "n_real", "generated_mean", "generated_sd", "n_generated")


def percentiles_to_unit(image: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Intensities mapped linearly from their ``lower`` / ``upper`` percentiles to [0, 1], clipped."""
    lo, hi = np.percentile(image, [lower, upper])
    if hi <= lo:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def tissue_means(image: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean of the scaled ``image`` under each tissue of ``labels`` (NaN where a tissue is absent)."""
    scaled = percentiles_to_unit(image)
    means = {}
    for tissue, ids in TISSUES.items():
        mask = np.isin(labels, ids)
        means[tissue] = float(scaled[mask].mean()) if mask.any() else float("nan")
    return means


def pairs_of(source: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(image, label) paths from a MONAI datalist (``image``/``label``) or a pair folder/manifest (its
    QC-rejected rows left out).

    Raises:
        InputError: nothing to read, or items without an image and a label.
    """
    source = Path(source)
    manifest = source / "manifest.csv" if source.is_dir() else source
    if manifest.suffix.lower() == ".csv":
        rows = read_csv(manifest)
        if not rows or not {"image", "label"} <= set(rows[0]):
            raise InputError(f"{manifest}: needs rows with 'image' and 'label' columns")
        kept = [r for r in rows if r.get("qc_status", "accepted") != "rejected"]  # as set assembly does
        return [(manifest.parent / r["image"], manifest.parent / r["label"]) for r in kept]
    items = [item for item in read_datalist(source) if "image" in item and "label" in item]
    if not items:
        raise InputError(f"{source}: no items with both 'image' and 'label'")
    return [(Path(item["image"]), Path(item["label"])) for item in items]


def _per_volume_means(pairs: list[tuple[Path, Path]]) -> dict[str, np.ndarray]:
    rows = []
    for image_path, label_path in pairs:
        image, labels = load_pair(image_path, label_path, allowed_labels=SYNTHSEG_LABEL_IDS)
        rows.append(tissue_means(image.array.astype(np.float32), labels.array))
    return {tissue: np.array([row[tissue] for row in rows]) for tissue in TISSUES}


def _stats(values: np.ndarray) -> tuple[float, float, int]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), 0
    return float(values.mean()), float(values.std()), int(values.size)


def write_fidelity_report(real: str | os.PathLike, generated: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Per-tissue mean intensity of real and generated images: ``fidelity.csv`` and ``fidelity.png``.

    Args:
        real: MONAI datalist of real image + label pairs (every section is read).
        generated: a pair folder or manifest written by ``spade_mri_ldm`` inference.
        output_dir: where the table and the bar plot go.

    Returns:
        The path of ``fidelity.csv``.
    """
    output_dir = Path(output_dir)
    real_means, generated_means = _per_volume_means(pairs_of(real)), _per_volume_means(pairs_of(generated))
    rows: list[dict[str, Any]] = []
    for tissue in TISSUES:
        real_mean, real_sd, n_real = _stats(real_means[tissue])
        gen_mean, gen_sd, n_gen = _stats(generated_means[tissue])
        rows.append({"tissue": tissue, "real_mean": real_mean, "real_sd": real_sd, "n_real": n_real,
                     "generated_mean": gen_mean, "generated_sd": gen_sd, "n_generated": n_gen})  # fmt: skip
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, [r["real_mean"] for r in rows], 0.4, yerr=[r["real_sd"] for r in rows], label="real", capsize=3)
    ax.bar(x + 0.2, [r["generated_mean"] for r in rows], 0.4, yerr=[r["generated_sd"] for r in rows],
           label="generated", capsize=3)  # fmt: skip
    ax.set_xticks(x, [r["tissue"] for r in rows])
    ax.set(ylabel="mean intensity (0.5-99.5 percentile scale)", title="Tissue contrast: real against generated")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, output_dir / "fidelity.png", dpi=110)
    return write_csv(output_dir / "fidelity.csv", rows, COLUMNS)
