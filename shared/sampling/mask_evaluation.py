"""The paper's Figure 3 for the mask generator: generated ventricle volume against ``c`` for several ``G``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import spearmanr

from shared.conditioning.features import MinMaxNormaliser
from shared.conditioning.tables import measure_ventricle_rows
from shared.fast_path import FastPath
from shared.io import read_csv, read_datalist, write_csv
from shared.latents import LatentScaler
from shared.sampling.guidance import GuidedSampler
from shared.sampling.mask_generation import generate_label_maps
from shared.viz import save_figure


def _check_grid(c_grid: Sequence[float], guidance_scales: Sequence[float], samples_per_c: int) -> None:
    from shared.io import InputError

    if not c_grid or not guidance_scales:
        raise InputError("evaluation: c_grid and guidance_scales must not be empty")
    if isinstance(samples_per_c, bool) or not isinstance(samples_per_c, int) or samples_per_c < 1:
        raise InputError(f"evaluation: samples_per_c must be an integer >= 1, got {samples_per_c!r}")


def _spearman(c: np.ndarray, volumes: np.ndarray) -> tuple[float, float]:
    """Spearman rho and p of ``volumes`` against ``c``; NaN when either is constant."""
    if c.size < 2 or np.ptp(volumes) == 0 or np.ptp(c) == 0:
        return float("nan"), float("nan")
    rho, p_value = spearmanr(c, volumes)
    return float(rho), float(p_value)


def evaluate_guidance(
    autoencoder: Any,
    diffusion: Any,
    inferer: GuidedSampler,
    scaler: LatentScaler,
    normaliser: MinMaxNormaliser,
    grid_path: str | os.PathLike,
    class_ids: Sequence[int],
    c_grid: Sequence[float],
    guidance_scales: Sequence[float],
    samples_per_c: int,
    seed: int,
    output_dir: str | os.PathLike,
    real_datalist: str | os.PathLike,
    device: Any = "cpu",
    batch_size: int = 1,
    fast_path: FastPath | None = None,
) -> Path:
    """Generate ``samples_per_c`` maps per ``c`` in ``c_grid`` for every ``G``; write the plot and tables.

    Writes ``figure3.png`` (mean +- SD generated ventricle volume against ``c`` per ``G``, with
    the real training volumes), ``figure3.csv`` (``G, c, n, mean_ml, sd_ml``) and
    ``spearman.csv`` (``G, rho, p_value, n``: requested ``c`` against achieved volume over the
    whole grid; ``rho_c0to1, p_value_c0to1, n_c0to1``: the same within the training range
    ``0 <= c <= 1``, since extrapolation beyond it is expected to saturate, as in the paper).
    Generated maps and manifests stay in ``G<value>/`` subfolders.

    ``inferer`` sets the scheduler and steps; its ``G`` is replaced by each of ``guidance_scales``.

    Returns:
        The path of ``spearman.csv``.
    """
    _check_grid(c_grid, guidance_scales, samples_per_c)
    output_dir = Path(output_dir)
    c_values = np.repeat(np.asarray(c_grid, dtype=np.float64), samples_per_c)
    table, correlations = [], []
    fig, ax = plt.subplots(figsize=(7, 5))
    real = measure_ventricle_rows([Path(item["label"]) for item in read_datalist(real_datalist, ["training"])])
    ax.scatter(
        [normaliser.transform(r["ratio"]) for r in real], [r["ventricle_ml"] for r in real],
        color="black", marker="x", label="real (training)",
    )  # fmt: skip
    for g in guidance_scales:
        manifest = generate_label_maps(
            autoencoder, diffusion, inferer.with_guidance(float(g)), scaler, normaliser, grid_path, class_ids,
            c_values, seed, output_dir / f"G{g:g}", device, batch_size, fast_path=fast_path,
        )  # fmt: skip
        rows = read_csv(manifest)
        requested = np.array([float(r["requested_c"]) for r in rows])
        volumes = np.array([float(r["ventricle_ml"]) for r in rows])
        rho, p_value = _spearman(requested, volumes)
        in_range = (requested >= 0) & (requested <= 1)
        rho_in, p_in = _spearman(requested[in_range], volumes[in_range])
        correlations.append(
            {"G": g, "rho": rho, "p_value": p_value, "n": len(rows),
             "rho_c0to1": rho_in, "p_value_c0to1": p_in, "n_c0to1": int(in_range.sum())}
        )  # fmt: skip
        means, sds = [], []
        for c in c_grid:
            chosen = volumes[np.isclose(requested, c)]
            means.append(chosen.mean())
            sds.append(chosen.std())
            table.append({"G": g, "c": c, "n": chosen.size, "mean_ml": chosen.mean(), "sd_ml": chosen.std()})
        ax.errorbar(
            c_grid, means, yerr=sds, marker="o", capsize=3, label=f"G = {g:g} (rho = {rho:.2f}; c <= 1: {rho_in:.2f})"
        )
    ax.axvspan(1.0, max(1.0, max(c_grid)), color="grey", alpha=0.15, label="c > 1: extrapolation")
    ax.set(xlabel="condition c", ylabel="ventricle volume (mL)", title="Generated ventricle volume against c")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, output_dir / "figure3.png", dpi=110)
    write_csv(output_dir / "figure3.csv", table, ["G", "c", "n", "mean_ml", "sd_ml"])
    columns = ["G", "rho", "p_value", "n", "rho_c0to1", "p_value_c0to1", "n_c0to1"]
    return write_csv(output_dir / "spearman.csv", correlations, columns)


def spearman_metrics(spearman_csv: str | os.PathLike) -> dict[str, float]:
    """``spearman_rho_G<g>`` (whole grid) and ``spearman_rho_c0to1_G<g>`` from ``spearman.csv``, for trackers."""
    metrics = {}
    for row in read_csv(spearman_csv):
        g = f"G{float(row['G']):g}"
        metrics[f"spearman_rho_{g}"] = float(row["rho"])
        metrics[f"spearman_rho_c0to1_{g}"] = float(row["rho_c0to1"])
    return metrics
