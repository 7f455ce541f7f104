"""Generating FLAIR + tumour-mask pairs with the slice-based LDM (or the 3D-LDM baseline).

Sampling runs DDPM, DDIM (``eta`` configurable), PNDM or DPM-Solver++ on the stacked latent, the slices are decoded
in chunks with their positions, the mask channel is thresholded at 0 (by default keeping only its
largest connected piece, see :func:`split_pair`), and every pair is written with a manifest of
requested and achieved tumour features and a mosaic.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from shared.conditioning.features import TUMOUR_FEATURE_NAMES, TumourFeatureNormaliser, tumour_features
from shared.fast_path import FastPath
from shared.io import InputError, load_image, load_volume, read_csv, read_grid_reference, save_volume
from shared.latents import LatentScaler, latent_shape
from shared.networks.tumour_unet import null_tumour_condition
from shared.sampling.guidance import GuidedSampler
from shared.sampling.schedulers import sampler_name, stochastic_step_kwargs
from shared.sampling.sharding import (
    SampleLedger,
    batches_of_this_rank,
    sampling_settings,
    unfinished,
    write_manifest_when_done,
)
from shared.viz import MosaicCase, mosaic_indices, save_label_mosaic

MANIFEST_COLUMNS: tuple[str, ...] = (
    "image",
    "label",
    *(f"requested_{name}" for name in TUMOUR_FEATURE_NAMES),
    *(f"achieved_{name}" for name in TUMOUR_FEATURE_NAMES),
    "tumour_voxels",
    "removed_voxels",
    "sampler",
    "num_inference_steps",
    "eta",
    "seed",
    "seconds",
)


def split_pair(decoded: torch.Tensor, keep_largest_component: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Decoded ``(2, X, Y, Z)`` -> (FLAIR clipped to [-1, 1] float32, mask uint8, voxels removed).

    The mask is ``channel 1 > 0``. With ``keep_largest_component`` only its largest 26-connected
    piece is kept (MONAI ``KeepLargestConnectedComponent``): a whole tumour is one piece, and the
    sampler can leave scattered specks beside it (a median of 54 pieces per sample with the first demo starter)
    that have no tumour in the image and would teach a segmenter false positives.
    """
    from monai.transforms import KeepLargestConnectedComponent

    image = decoded[0].clamp(-1.0, 1.0).float().cpu().numpy()
    raw = (decoded[1] > 0).cpu()
    mask = raw
    if keep_largest_component and bool(raw.any()):
        largest = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False, connectivity=None)
        mask = largest(raw[None].to(torch.uint8))[0] > 0
    removed = int(raw.sum()) - int(mask.sum())
    return image, mask.numpy().astype(np.uint8), removed


@torch.no_grad()
def generate_tumour_pairs(
    autoencoder: torch.nn.Module,
    diffusion: torch.nn.Module,
    inferer: GuidedSampler,
    scaler: LatentScaler,
    normaliser: TumourFeatureNormaliser,
    grid_path: str | os.PathLike,
    vectors: np.ndarray,
    eta: float,
    seed: int,
    output_dir: str | os.PathLike,
    device: Any = "cpu",
    batch_size: int = 1,
    progress: bool = True,
    fast_path: FastPath | None = None,
    keep_largest_component: bool = True,
) -> Path:
    """Sample one pair per tumour vector ``(N, 9)``; write ``images/``, ``labels/``, ``manifest.csv``, ``mosaic.png``.

    ``inferer`` runs the sampling loop (scheduler, steps, ``G``). Its ``guidance_scale`` is
    classifier-free guidance ``G`` against the null condition (1: plain
    conditional sampling, one pass per step; a model trained with ``condition_dropout`` is needed
    for ``G != 1``). ``keep_largest_component``: keep only the mask's largest piece (see
    :func:`split_pair`); the voxels dropped are the manifest's ``removed_voxels``.

    Each sample's initial noise (and DDPM/DDIM step noise) comes from ``seed + index``, so a
    sample does not depend on the batch size. ``seconds`` in the manifest is the wall time per
    volume (sampling + decoding). ``fast_path`` sets precision, layout, compilation and tiled
    decoding (default: eager fp32); decoding windows must span every slice (``decode_roi``'s
    last size >= the depth), since each slice is decoded with its position. Returns the manifest's path.
    """
    if not isinstance(keep_largest_component, bool):
        raise InputError(f"keep_largest_component: expected true or false, got {keep_largest_component!r}")
    if not 0.0 <= float(eta) <= 1.0:
        raise InputError(f"eta: expected a value in [0, 1], got {eta}")
    output_dir = Path(output_dir)
    shape, affine = read_grid_reference(grid_path)
    fast = fast_path or FastPath()
    fast.prepare(autoencoder)
    fast.prepare(diffusion)
    z_shape = latent_shape(autoencoder, 2, shape, device)
    if fast.decode_roi is not None and fast.decode_roi[-1] < z_shape[-1]:
        raise InputError(
            f"decode_roi: the last size must cover all {z_shape[-1]} slices (each is decoded with its position), "
            f"got {list(fast.decode_roi)}"
        )
    scheduler, guidance_scale = inferer.scheduler, inferer.guidance_scale
    sampler = sampler_name(scheduler)
    shown = mosaic_indices(vectors[:, 0])
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    names = [f"pair_{i:04d}.nii.gz" for i in range(len(vectors))]
    requests = [[float(v) for v in vector] for vector in vectors]
    extra = {"eta": float(eta), "keep_largest_component": keep_largest_component}
    settings = sampling_settings(inferer, seed, batch_size, fast, autoencoder, diffusion, **extra)
    ledger = SampleLedger(output_dir, {"bundle": "slice_based_ldm_brats", **settings})
    mine = batches_of_this_rank(len(vectors), batch_size)
    for indices in tqdm(mine, desc="tumour pairs", unit="batch", disable=not progress):
        if not unfinished(ledger, indices, names, requests):
            continue  # made by an earlier run with the same settings
        start = indices[0]
        began = time.perf_counter()
        noise = torch.stack([torch.randn(z_shape, generator=torch.Generator().manual_seed(seed + i)) for i in indices])
        context = torch.as_tensor(vectors[list(indices)], dtype=torch.float32, device=device)
        step_kwargs = stochastic_step_kwargs(scheduler, eta, torch.Generator(device=device).manual_seed(seed + start))
        with fast.inference(device):
            guided = float(guidance_scale) != 1.0
            null = null_tumour_condition(len(indices), context.shape[1], device) if guided else None
            latents = inferer(fast.layout(noise.to(device)), diffusion, context, null, step_kwargs)
            decoded = fast.decode(autoencoder.decode_stage_2_outputs, scaler.inverse(latents))
        seconds = (time.perf_counter() - began) / len(indices)
        for i, pair in zip(indices, decoded):
            image, mask, removed = split_pair(pair, keep_largest_component)
            name = names[i]
            save_volume(output_dir / "images" / name, image, affine, dtype=np.float32)
            save_volume(output_dir / "labels" / name, mask, affine, dtype=np.uint8)
            achieved = normaliser.transform(tumour_features(mask))
            row: dict[str, Any] = {"image": f"images/{name}", "label": f"labels/{name}"}
            row.update({f"requested_{n}": float(v) for n, v in zip(TUMOUR_FEATURE_NAMES, vectors[i])})
            row.update({f"achieved_{n}": float(v) for n, v in zip(TUMOUR_FEATURE_NAMES, achieved)})
            row.update(
                tumour_voxels=int(mask.sum()),
                removed_voxels=removed,
                sampler=sampler,
                num_inference_steps=inferer.num_inference_steps,
                eta=float(eta) if sampler == "ddim" else "",
                seed=seed + i,
                seconds=round(seconds, 3),
            )
            ledger.mark(name, row, [row["image"], row["label"]], requests[i])

    def mosaic(rows: list[dict[str, Any]]) -> None:
        cases = []
        for i in shown:
            image = load_image(output_dir / rows[i]["image"]).array
            mask = load_volume(output_dir / rows[i]["label"]).array
            title = f"{names[i]} volume {vectors[i][0]:.2f} -> {float(rows[i]['achieved_volume']):.2f}"
            cases.append(MosaicCase((image + 1.0) / 2.0, mask, spacing, title))
        save_label_mosaic(output_dir / "mosaic.png", cases, focus="labels")

    return write_manifest_when_done(ledger, names, requests, MANIFEST_COLUMNS, mosaic)


def tumour_manifest_metrics(manifest: str | os.PathLike) -> dict[str, float]:
    """Summary numbers of a pair manifest, for trackers and docs.

    ``volume_spearman`` / ``volume_pearson``: correlation of requested and achieved (normalised)
    tumour volume; ``empty_fraction``: share of samples without tumour; ``seconds_per_volume``.
    """
    from scipy.stats import pearsonr, spearmanr

    rows = read_csv(manifest)
    requested = np.array([float(r["requested_volume"]) for r in rows])
    achieved = np.array([float(r["achieved_volume"]) for r in rows])
    varied = len(rows) > 2 and np.ptp(requested) > 0 and np.ptp(achieved) > 0
    return {
        "num_samples": float(len(rows)),
        "volume_spearman": float(spearmanr(requested, achieved)[0]) if varied else float("nan"),
        "volume_pearson": float(pearsonr(requested, achieved)[0]) if varied else float("nan"),
        "mean_abs_volume_error": float(np.abs(achieved - requested).mean()) if rows else float("nan"),
        "empty_fraction": float(np.mean([int(r["tumour_voxels"]) == 0 for r in rows])) if rows else float("nan"),
        "seconds_per_volume": float(np.mean([float(r["seconds"]) for r in rows])) if rows else float("nan"),
    }
