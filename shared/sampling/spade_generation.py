"""Painting MR images for label maps with the SPADE LDM, written as image + label pairs with a manifest."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from shared.fast_path import FastPath
from shared.io import (
    InputError,
    load_image,
    load_label_map,
    load_volume,
    read_csv,
    resolve_volume_inputs,
    save_volume,
)
from shared.latents import LatentScaler, latent_shape
from shared.sampling.guidance import GuidedSampler
from shared.sampling.sharding import SampleLedger, batches_of_this_rank, sampling_settings, write_manifest_when_done
from shared.viz import MosaicCase, mosaic_indices, save_label_mosaic

PAIR_COLUMNS = ("image", "label", "source_label", "seed", "sampler", "num_inference_steps")


def label_map_inputs(source: str | os.PathLike) -> list[tuple[Path, dict[str, str]]]:
    """The label maps to paint, each with the manifest row it came with (empty without a manifest).

    ``source`` is a folder of label maps, a MONAI datalist (``label`` entries), one label-map
    file, or a ``manifest.csv`` of ``ventricle_mask_ldm`` (its ``file`` column, relative to the
    manifest). A folder holding such a manifest is read through it, so the requested and
    achieved conditions of each map travel on into the pair manifest.

    Raises:
        InputError: nothing to read, or a manifest row naming a missing file.
    """
    source = Path(source)
    manifest = source / "manifest.csv" if source.is_dir() else source
    if manifest.suffix.lower() == ".csv" and manifest.is_file():
        rows = read_csv(manifest)
        if not rows or "file" not in rows[0]:
            raise InputError(f"{manifest}: manifest has no rows with a 'file' column")
        inputs = [(manifest.parent / row["file"], row) for row in rows]
        missing = [path for path, _ in inputs if not path.is_file()]
        if missing:
            raise InputError(f"{missing[0]}: listed in {manifest.name} but missing")
        return inputs
    return [(path, {}) for path in resolve_volume_inputs(source, key="label")]


def one_hot(labels: np.ndarray, class_ids: Sequence[int]) -> torch.Tensor:
    """``(X, Y, Z)`` label ids -> ``(1, K, X, Y, Z)`` float one-hot over ``class_ids`` (in that order)."""
    lookup = np.full(int(max(class_ids)) + 1, -1, dtype=np.int64)
    lookup[np.asarray(class_ids, dtype=np.int64)] = np.arange(len(class_ids))
    index = torch.from_numpy(lookup[labels])
    return torch.nn.functional.one_hot(index, len(class_ids)).permute(3, 0, 1, 2)[None].float()


@torch.no_grad()
def paint_images(
    autoencoder: torch.nn.Module,
    diffusion: torch.nn.Module,
    inferer: GuidedSampler,
    scaler: LatentScaler,
    source: str | os.PathLike,
    class_ids: Sequence[int],
    seed: int,
    output_dir: str | os.PathLike,
    device: Any = "cpu",
    progress: bool = True,
    fast_path: FastPath | None = None,
) -> Path:
    """Generate one image per label map; write ``images/``, ``labels/``, ``manifest.csv`` and ``mosaic.png``.

    Each image starts from the noise of ``seed + index``; the label map is copied unchanged
    next to it (same affine), and its ``ventricle_mask_ldm`` manifest columns, if any, are
    carried into the pair manifest. ``inferer`` runs the sampling loop (scheduler and steps; the
    label map goes to every network call as ``seg``, no guidance). ``fast_path`` sets precision,
    layout and compilation (default: eager fp32); tiled decoding is refused, since the SPADE
    decoder needs the whole label map.

    Returns:
        The manifest's path (``output_dir/manifest.csv``).
    """
    fast = fast_path or FastPath()
    if fast.decode_roi is not None:
        raise InputError("decode_roi: tiled decoding is not available for SPADE (the decoder needs the whole map)")
    inputs = label_map_inputs(source)
    output_dir = Path(output_dir)
    fast.prepare(autoencoder)
    fast.prepare(diffusion)
    shown = mosaic_indices(list(range(len(inputs))))
    names = [f"pair_{index:04d}.nii.gz" for index in range(len(inputs))]
    requests = [str(path) for path, _ in inputs]
    settings = sampling_settings(inferer, seed, 1, fast, autoencoder, diffusion, class_ids=[int(k) for k in class_ids])
    ledger = SampleLedger(output_dir, {"bundle": "spade_mri_ldm", **settings})
    z_shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
    mine = [batch[0] for batch in batches_of_this_rank(len(inputs), 1)]
    for index in tqdm(mine, desc="images", unit="map", disable=not progress):
        if ledger.finished(names[index], requests[index]) is not None:
            continue  # made by an earlier run with the same settings
        path, source_row = inputs[index]
        labels = load_label_map(path, allowed_labels=class_ids)
        seg = one_hot(labels.array, class_ids).to(device)
        if labels.array.shape not in z_shapes:  # one encoder probe per grid, not per map
            z_shapes[labels.array.shape] = latent_shape(autoencoder, 1, labels.array.shape, device)
        z_shape = z_shapes[labels.array.shape]
        latents = torch.randn(z_shape, generator=torch.Generator().manual_seed(seed + index))[None].to(device)
        with fast.inference(device):
            latents = inferer(fast.layout(latents), diffusion, seg=seg)
            decoded = fast.decode(partial(autoencoder.decode_stage_2_outputs, seg=seg), scaler.inverse(latents))
        image = decoded.clamp(0.0, 1.0)[0, 0].cpu().numpy()
        name = names[index]
        save_volume(output_dir / "images" / name, image.astype(np.float32), labels.affine, dtype=np.float32)
        save_volume(output_dir / "labels" / name, labels.array, labels.affine, dtype=np.int16)
        extra = {k: v for k, v in source_row.items() if k not in PAIR_COLUMNS and k != "file"}
        row = {"image": f"images/{name}", "label": f"labels/{name}", "source_label": str(path), "seed": seed + index,
               "sampler": settings["sampler"], "num_inference_steps": inferer.num_inference_steps, **extra}  # fmt: skip
        ledger.mark(name, row, [row["image"], row["label"]], requests[index])

    def mosaic(rows: list[dict[str, Any]]) -> None:
        cases = []
        for index in shown:
            image, labels = (
                load_image(output_dir / rows[index]["image"]),
                load_volume(output_dir / rows[index]["label"]),
            )
            title = f"{names[index]} <- {Path(rows[index]['source_label']).name}"
            cases.append(MosaicCase(image.array, labels.array, labels.spacing, title))
        save_label_mosaic(output_dir / "mosaic.png", cases, focus="ventricles")

    def columns(rows: list[dict[str, Any]]) -> list[str]:  # the source manifest's columns follow
        return list(PAIR_COLUMNS) + [k for k in rows[0] if k not in PAIR_COLUMNS]

    return write_manifest_when_done(ledger, names, requests, columns, mosaic)


def pair_metrics(manifest: str | os.PathLike) -> dict[str, float]:
    """Summary numbers of a painting manifest, for trackers: the number of image/label pairs written."""
    return {"num_pairs": float(len(read_csv(manifest)))}
