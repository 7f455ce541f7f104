"""Image quality of generated tumour pairs as in the SBLDM paper's Table 1, and the results table.

3D PSNR and SSIM of the FLAIR channel after mapping ``[-1, 1]`` to ``[0, 1]`` (data range 1),
each generated volume against an *unpaired* real volume (a seeded shuffle of the real set,
cycled), averaged; with the networks' parameter count and the sampling time per volume. Every
method/sampler evaluated adds (or replaces) its row in one table (CSV + Markdown), beside the
paper's figures for reference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.io import InputError, atomic_path, load_image, read_csv, read_datalist, write_csv
from shared.sampling.tumour_generation import tumour_manifest_metrics

TABLE_COLUMNS: tuple[str, ...] = (
    "method",
    "sampler",
    "steps",
    "psnr",
    "ssim",
    "params_m",
    "seconds_per_volume",
    "num_samples",
    "volume_spearman",
    "empty_fraction",
)

#: The paper's Table 1 (A6000 GPU, BraTS 2022, 192x192x96), for reference in the Markdown table.
PAPER_TABLE1: tuple[tuple[str, str, str, str, str], ...] = (
    ("SBLDM (DDPM)", "21.466", "0.731", "159", "30.9"),
    ("SBLDM (DDIM)", "21.701", "0.726", "159", "1.965"),
    ("3D-LDM", "21.034", "0.677", "728", "13.3"),
    ("3D-LSGAN", "20.091", "0.601", "", ""),
)


def count_parameters(*networks: torch.nn.Module) -> int:
    """Parameters of all ``networks`` together."""
    return sum(p.numel() for network in networks for p in network.parameters())


def signed_to_unit_tensor(volume: np.ndarray) -> torch.Tensor:
    """A ``[-1, 1]`` volume as a ``(1, 1, X, Y, Z)`` tensor in ``[0, 1]``."""
    return ((torch.as_tensor(volume, dtype=torch.float32).clamp(-1, 1) + 1.0) / 2.0)[None, None]


def image_quality(
    generated: Sequence[str | os.PathLike], real: Sequence[str | os.PathLike], seed: int = 0
) -> tuple[float, float]:
    """Mean 3D PSNR and SSIM (data range 1) of generated FLAIR volumes against unpaired real ones."""
    from monai.metrics import PSNRMetric, SSIMMetric

    if not generated or not real:
        raise InputError("image quality: need generated and real volumes")
    order = np.random.default_rng(seed).permutation(len(real))
    psnr, ssim = PSNRMetric(max_val=1.0), SSIMMetric(spatial_dims=3, data_range=1.0)
    for index, path in enumerate(generated):
        fake = load_image(path)
        reference = load_image(real[order[index % len(real)]])
        if fake.array.shape != reference.array.shape:
            raise InputError(
                f"{path}: shape {fake.array.shape} differs from real {reference.path} {reference.array.shape}"
            )
        y_pred, y = signed_to_unit_tensor(fake.array), signed_to_unit_tensor(reference.array)
        psnr(y_pred, y)
        ssim(y_pred, y)
    return float(psnr.aggregate().item()), float(ssim.aggregate().item())


def update_results_table(table: str | os.PathLike, row: dict[str, Any]) -> Path:
    """Add ``row`` to the CSV ``table`` (replacing one of the same method, sampler and steps); rewrite the Markdown."""
    table = Path(table)
    key = (str(row["method"]), str(row["sampler"]), str(row["steps"]))
    rows = [r for r in (read_csv(table) if table.is_file() else []) if (r["method"], r["sampler"], r["steps"]) != key]
    rows.append({column: row.get(column, "") for column in TABLE_COLUMNS})
    write_csv(table, rows, TABLE_COLUMNS)
    lines = [
        "| method | sampler | steps | PSNR (dB) | SSIM | parameters (M) | s / volume | samples | rho(volume) | empty |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["method"], r["sampler"], r["steps"], _fmt(r["psnr"], 3), _fmt(r["ssim"], 3), _fmt(r["params_m"], 1),
                 _fmt(r["seconds_per_volume"], 2), r["num_samples"], _fmt(r["volume_spearman"], 2),
                 _fmt(r["empty_fraction"], 2)]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Paper, Table 1 (BraTS 2022, 192x192x96, A6000 GPU):", "",
              "| method | PSNR (dB) | SSIM | parameters (M) | s / volume |", "|---|---|---|---|---|"]  # fmt: skip
    lines += ["| " + " | ".join(cells) + " |" for cells in PAPER_TABLE1]
    with atomic_path(table.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return table


def _fmt(value: Any, digits: int) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def table1_row(
    manifest: str | os.PathLike, real_datalist: str | os.PathLike, params_m: float, seed: int = 0
) -> dict[str, float]:
    """Table-1 figures of the pairs of ``manifest`` against the real images of ``real_datalist``.

    Args:
        manifest: a generation's ``manifest.csv`` (image paths relative to its folder).
        real_datalist: the real volumes (every section) each generated FLAIR is set against, unpaired.
        params_m: the generator's parameters, in millions (autoencoder and diffusion UNet).
        seed: the shuffle that pairs generated and real volumes.

    Returns:
        ``psnr``, ``ssim``, ``params_m``, ``seconds_per_volume``, ``num_samples``, ``volume_spearman``,
        ``empty_fraction``.
    """
    manifest = Path(manifest)
    rows = read_csv(manifest)
    if not rows:
        raise InputError(f"{manifest}: no generated pairs")
    generated = [manifest.parent / r["image"] for r in rows]
    real = [item["image"] for item in read_datalist(real_datalist)]
    psnr, ssim = image_quality(generated, real, seed)
    summary = tumour_manifest_metrics(manifest)
    return {
        "psnr": psnr,
        "ssim": ssim,
        "params_m": float(params_m),
        "seconds_per_volume": summary["seconds_per_volume"],
        "num_samples": int(summary["num_samples"]),
        "volume_spearman": summary["volume_spearman"],
        "empty_fraction": summary["empty_fraction"],
    }


def evaluate_generation(
    manifest: str | os.PathLike,
    real_datalist: str | os.PathLike,
    table: str | os.PathLike,
    method: str,
    networks: Sequence[torch.nn.Module],
    seed: int = 0,
) -> dict[str, float]:
    """Table-1 row for the pairs of ``manifest`` (:func:`table1_row`), added to ``table``; returns its numbers."""
    result = table1_row(manifest, real_datalist, count_parameters(*networks) / 1e6, seed)
    first = read_csv(manifest)[0]
    update_results_table(
        table, {"method": method, "sampler": first["sampler"], "steps": first["num_inference_steps"], **result}
    )
    return result
