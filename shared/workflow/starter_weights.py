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

import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.io import InputError, atomic_path, read_json, write_json

MANIFEST = "manifest.json"
STARTER_FOLDER = "starter"
MAX_FILE_BYTES = 10 * 1024 * 1024


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


#: Starter-manifest key of the data each training stage learnt from.
LEDGER_KEY = "ledger"


def measure_starter_ledger(
    stages: Mapping[str, Any], study: str, model_name: str, work_dir: str | os.PathLike
) -> dict[str, dict[str, Any]]:
    """The ledger entries of a starter's training stages, measured on their data drawn again.

    Args:
        stages: ``{stage: demo recipe params}`` (``autoencoder``, ``diffusion``), the data each
            stage was trained on (:class:`shared.workflow.demo_recipes.DemoRecipe` fields).
        study: ``ventricles`` or ``tumours`` (the quantity the ledger ranges over).
        model_name: the generator's name in ledgers (``mask LDM`` ...).
        work_dir: where the data is drawn (a scratch folder).

    Returns:
        ``{stage: {"data": recipe params, **Ledger.to_json()}}`` for the manifest's ``ledger``.
    """
    from shared.workflow.demo_recipes import DemoRecipe
    from shared.workflow.ledger import datalist_ledger

    entries = {}
    for stage, params in stages.items():
        recipe = DemoRecipe.from_params(params)
        datalist = recipe.write(Path(work_dir) / stage)
        ledger = datalist_ledger(f"{model_name} {stage}", study, datalist, source=_recipe_words(recipe))
        if list(ledger.training) != sorted(recipe.subjects()["training"]):
            raise InputError(f"{datalist}: its subjects are not those of the recipe {recipe.params()}")
        entries[stage] = {"data": recipe.params(), **ledger.to_json()}
    return entries


def _recipe_words(recipe: Any) -> str:
    what = "demo brains" if recipe.kind == "brains" else "demo tumour cases"
    extra = f", prepared to {'x'.join(str(n) for n in recipe.prepared_shape)}" if recipe.prepared_shape else ""
    return f"{recipe.n_cases} {what}, seed {recipe.seed}{extra}"


def record_starter_ledger(folder: str | os.PathLike, ledger: Mapping[str, Any]) -> Path:
    """Write ``ledger`` (:func:`measure_starter_ledger`) into a starter folder's manifest (the weights stay)."""
    path = Path(folder) / MANIFEST
    manifest = read_starter_manifest(folder)
    manifest[LEDGER_KEY] = dict(ledger)
    return write_json(path, manifest)


def read_starter_ledgers(folder: str | os.PathLike) -> list[tuple[str, Any, Any]]:
    """``[(stage, Ledger, DemoRecipe), ...]`` of a starter folder, in training order.

    Raises:
        InputError: the manifest has no ledger (starter weights of unknown data cannot be a study's control).
    """
    from shared.workflow.demo_recipes import DemoRecipe
    from shared.workflow.ledger import Ledger

    manifest = read_starter_manifest(folder)
    entries = manifest.get(LEDGER_KEY)
    if not isinstance(entries, dict) or not entries:
        raise InputError(
            f"{Path(folder) / MANIFEST}: no '{LEDGER_KEY}' of the data its stages learnt from; "
            "record it with scripts/make_starter_weights.py --ledger"
        )
    return [(stage, Ledger.from_json(entry), DemoRecipe.from_params(entry["data"])) for stage, entry in entries.items()]
