"""Starter weights: small trained generator weights shipped with a bundle, checked before use.

A bundle's ``starter/`` folder holds the files its inference reads from ``ckpt_dir`` (weights
and the statistics saved beside them: normalisers, latent scaler, grid) and ``manifest.json``:

.. code-block:: json

    {"bundle": "ventricle_mask_ldm",
     "files": {"model.pt": {"sha256": "...", "bytes": 123}, ...},
     "preset": "science",
     "overrides": {"diffusion_epochs": 400},
     "precision": "fp16",
     "provenance": {"data": "python scripts/make_demo_data.py ...", "commands": [...], "commit": "...", ...}}

:func:`install_starter_weights` copies the files into a models folder only after every
checksum matches, so a truncated or edited file is never loaded. ``scripts/make_starter_weights.py``
writes such a folder from a bundle's trained ``models`` folder (weights only: the optimiser
state and epoch checkpoints stay behind; ``precision: fp16`` stores the floating-point tensors
in half precision to stay under the 10 MB limit; ``load_state_dict`` casts them back to the
network's fp32). ``preset`` and ``overrides`` are the recipe: the bundle's training and
inference run with ``configs/presets/<preset>.yaml`` and these values, for the starter weights
and when they are retrained.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.io import InputError, atomic_path, read_json, sha256_of, write_json

MANIFEST = "manifest.json"
STARTER_FOLDER = "starter"
MAX_FILE_BYTES = 10 * 1024 * 1024


def read_starter_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a starter folder (one clear error when it is missing or malformed)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: missing starter-weight manifest")
    manifest = read_json(path)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise InputError(f"{path}: 'files' must map file names to their sha256")
    for name, entry in files.items():
        if Path(name).name != name or not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise InputError(f"{path}: file entry '{name}' needs a plain file name and a sha256")
    if not isinstance(manifest.get("preset"), str) or not isinstance(manifest.get("overrides", {}), dict):
        raise InputError(f"{path}: needs 'preset' (a preset name) and 'overrides' (config values)")
    return manifest


def verify_starter_weights(folder: str | os.PathLike) -> dict[str, Any]:
    """Check every file of a starter folder against its manifest; returns the manifest.

    Raises :class:`InputError` naming the first missing file or checksum mismatch.
    """
    folder = Path(folder)
    manifest = read_starter_manifest(folder)
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"{path}: listed in {MANIFEST} but missing")
        found = sha256_of(path)
        if found != entry["sha256"]:
            raise InputError(f"{path}: sha256 {found[:12]}... does not match the manifest's {entry['sha256'][:12]}...")
    return manifest


def install_starter_weights(folder: str | os.PathLike, models_dir: str | os.PathLike) -> dict[str, Any]:
    """Verify a starter folder, then copy its files into ``models_dir`` (atomically, per file).

    Returns the manifest. Nothing is copied when any checksum fails.
    """
    manifest = verify_starter_weights(folder)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    for name in manifest["files"]:
        with atomic_path(models_dir / name) as tmp:
            shutil.copyfile(Path(folder) / name, tmp)
    write_json(models_dir / "starter_manifest.json", manifest)
    return manifest


PRECISIONS = ("fp32", "fp16")


def _weights_only(source: Path, destination: Path, precision: str) -> None:
    """Copy a checkpoint keeping only the model's state dict, floating tensors in ``precision``."""
    import torch

    state = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if precision == "fp16":
        state = {k: v.half() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, destination)


def write_starter_weights(
    models_dir: str | os.PathLike,
    output: str | os.PathLike,
    bundle: str,
    files: Sequence[str],
    preset: str,
    overrides: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    precision: str = "fp16",
    continuations: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Write a starter folder from a trained ``models_dir``; returns its manifest.

    ``continuations``: the recipe's later diffusion runs, in order, each resumed from the last
    checkpoint with these config values over ``overrides`` (e.g. more epochs at another loss
    weight); the manifest keeps them so that the main command repeats them when it trains the
    generators itself (``--generators_from real``).

    ``.pt`` files are reduced to the model's state dict (in ``precision``); every other file is
    copied as is.
    Refuses files over 10 MB (the project's limit for committed weights). The folder is
    written under a temporary name and renamed at the end.
    """
    models_dir, output = Path(models_dir), Path(output)
    if precision not in PRECISIONS:
        raise InputError(f"--precision: unknown '{precision}', expected one of {', '.join(PRECISIONS)}")
    missing = [name for name in files if not (models_dir / name).is_file()]
    if missing:
        raise InputError(f"{models_dir / missing[0]}: missing; train the bundle first")
    partial = output.parent / f".{output.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    entries: dict[str, dict[str, Any]] = {}
    for name in files:
        target = partial / Path(name).name
        if name.endswith(".pt"):
            _weights_only(models_dir / name, target, precision)
        else:
            shutil.copyfile(models_dir / name, target)
        size = target.stat().st_size
        if size > MAX_FILE_BYTES:
            shutil.rmtree(partial)
            raise InputError(f"{models_dir / name}: {size / 2**20:.1f} MB of weights, over the 10 MB starter limit")
        entries[target.name] = {"sha256": sha256_of(target), "bytes": size}
    manifest = {
        "bundle": bundle,
        "files": entries,
        "preset": str(preset),
        "overrides": dict(overrides or {}),
        "continuations": [dict(step) for step in continuations],
        "precision": precision,
        "provenance": dict(provenance or {}),
    }
    write_json(partial / MANIFEST, manifest)
    if output.exists():
        shutil.rmtree(output)
    partial.rename(output)
    return manifest
