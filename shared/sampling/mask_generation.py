"""Generating label maps with the ventricle mask LDM and writing them with a manifest and a mosaic."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from shared.conditioning.features import MinMaxNormaliser, measure_ventricles
from shared.engines.diffusion import make_context, null_context
from shared.fast_path import FastPath
from shared.io import load_label_map, read_csv, read_grid_reference, save_volume
from shared.labels import mean_intensity_map
from shared.latents import LatentScaler, latent_shape
from shared.sampling.guidance import GuidedSampler
from shared.sampling.sharding import (
    SampleLedger,
    batches_of_this_rank,
    sampling_settings,
    unfinished,
    write_manifest_when_done,
)
from shared.viz import MosaicCase, mosaic_indices, save_label_mosaic

MANIFEST_COLUMNS = (
    "file",
    "requested_c",
    "requested_ratio",
    "ventricle_ml",
    "icv_ml",
    "achieved_ratio",
    "achieved_c",
    "sampler",
    "guidance_scale",
    "num_inference_steps",
    "seed",
)


@torch.no_grad()
def generate_label_maps(
    autoencoder: torch.nn.Module,
    diffusion: torch.nn.Module,
    inferer: GuidedSampler,
    scaler: LatentScaler,
    normaliser: MinMaxNormaliser,
    grid_path: str | os.PathLike,
    class_ids: Sequence[int],
    c_values: np.ndarray,
    seed: int,
    output_dir: str | os.PathLike,
    device: Any = "cpu",
    batch_size: int = 1,
    progress: bool = True,
    fast_path: FastPath | None = None,
) -> Path:
    """Sample one label map per ``c``, save them, and write ``manifest.csv`` and ``mosaic.png``.

    Each sample's initial noise comes from ``seed + index``, so a sample does not depend
    on the batch size or on the other requested conditions. Under torchrun the batches are
    shared among the ranks and rank 0 writes the manifest; finished samples of an earlier run
    with the same settings are kept (:mod:`shared.sampling.sharding`). The mosaic shows up to
    ``MOSAIC_CASES`` samples spread over the requested range of ``c``, smallest first.
    ``inferer`` runs the guided sampling loop (scheduler, steps, ``G``); ``fast_path`` sets
    precision, layout, compilation and tiled decoding (default: eager fp32).

    Returns:
        The manifest's path (``output_dir/manifest.csv``).
    """
    output_dir = Path(output_dir)
    shape, affine = read_grid_reference(grid_path)
    ids = np.asarray(class_ids, dtype=np.int16)
    fast = fast_path or FastPath()
    fast.prepare(autoencoder)
    fast.prepare(diffusion)
    z_shape = latent_shape(autoencoder, len(ids), shape, device)
    shown = mosaic_indices(c_values)
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    requested_ratios = np.atleast_1d(normaliser.inverse(np.asarray(c_values, dtype=np.float64)))
    names = [f"mask_{i:04d}.nii.gz" for i in range(len(c_values))]
    requests = [float(c) for c in c_values]
    settings = sampling_settings(inferer, seed, batch_size, fast, autoencoder, diffusion, class_ids=ids.tolist())
    ledger = SampleLedger(output_dir, {"bundle": "ventricle_mask_ldm", **settings})
    mine = batches_of_this_rank(len(c_values), batch_size)
    for indices in tqdm(mine, desc="label maps", unit="batch", disable=not progress):
        if not unfinished(ledger, indices, names, requests):
            continue  # made by an earlier run with the same settings
        noise = torch.stack(
            [torch.randn(z_shape, generator=torch.Generator().manual_seed(seed + i)) for i in indices]
        ).to(device)
        c = torch.tensor([c_values[i] for i in indices], dtype=torch.float32, device=device)
        context = make_context(c, torch.ones_like(c, dtype=torch.bool))
        with fast.inference(device):
            latents = inferer(fast.layout(noise), diffusion, context, null_context(len(c), device))
            logits = fast.decode(autoencoder.decode_stage_2_outputs, scaler.inverse(latents.float()))
        label_maps = ids[logits.argmax(dim=1).cpu().numpy()]
        for i, labels in zip(indices, label_maps):
            save_volume(output_dir / names[i], labels, affine, dtype=np.int16)
            measures = measure_ventricles(labels, affine)
            row = {
                "file": names[i],
                "requested_c": float(c_values[i]),
                "requested_ratio": float(requested_ratios[i]),
                "ventricle_ml": measures.ventricle_ml,
                "icv_ml": measures.icv_ml,
                "achieved_ratio": measures.ratio,
                "achieved_c": normaliser.transform(measures.ratio),
                "sampler": settings["sampler"],
                "guidance_scale": inferer.guidance_scale,
                "num_inference_steps": inferer.num_inference_steps,
                "seed": seed + i,
            }
            ledger.mark(names[i], row, [names[i]], requests[i])

    def mosaic(rows: list[dict[str, Any]]) -> None:
        cases = []
        for i in shown:
            labels = load_label_map(output_dir / names[i]).array
            title = f"{names[i]} c={c_values[i]:.2f} -> {float(rows[i]['ventricle_ml']):.1f} mL"
            cases.append(MosaicCase(mean_intensity_map(labels), labels, spacing, title))
        save_label_mosaic(output_dir / "mosaic.png", cases, focus="ventricles")

    return write_manifest_when_done(ledger, names, requests, MANIFEST_COLUMNS, mosaic)


def manifest_metrics(manifest: str | os.PathLike) -> dict[str, float]:
    """Summary numbers of a generation manifest, for trackers: sample count, mean volume, mean |c error|."""
    rows = read_csv(manifest)
    volumes = np.array([float(r["ventricle_ml"]) for r in rows])
    c_errors = np.array([abs(float(r["achieved_c"]) - float(r["requested_c"])) for r in rows])
    return {
        "num_samples": float(len(rows)),
        "mean_ventricle_ml": float(volumes.mean()) if rows else float("nan"),
        "mean_abs_c_error": float(c_errors.mean()) if rows else float("nan"),
    }
