"""Write a bundle's starter weights (``bundles/<bundle>/starter/``) from its trained models folder.

The starter weights the main command uses were made this way, after training each bundle with
the recipe recorded in its manifest (``preset`` + ``overrides``; the exact commands are in the
manifest's provenance and in the README, "Starter weights")::

    python scripts/make_starter_weights.py ventricle_mask_ldm \\
        --models_dir bundles/ventricle_mask_ldm/models_science --preset science \\
        --overrides "{'diffusion_epochs': 400}" \\
        --data "python scripts/make_demo_data.py brains outputs/science32 --n_cases 96 --shape 32,32,32 ..."

Only the files the bundle's inference reads are kept; ``.pt`` files keep the model's state
dict alone, in fp16 by default (``--precision fp32`` keeps full precision; each file must stay
under 10 MB). Every file is listed with its sha256 in ``manifest.json``; the main command
copies them only after the checksums match.

``--ledger "{'autoencoder': {...}, 'diffusion': {...}}"`` records the data ledger: per training
stage, the demo recipe of its data (``shared.workflow.demo_recipes.DemoRecipe`` fields). The data
is drawn again, and its subjects and quantity range are written into the manifest
(``scripts/record_starter_ledger.py`` does this for weights already written).
"""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shared.cli.runner import run_cli
from shared.export.starter_weights import STARTER_FOLDER, write_starter_weights
from shared.io import InputError
from shared.workflow.starter_ledgers import BUNDLE_STUDIES, record_ledger

ROOT = Path(__file__).resolve().parents[1]

#: What each bundle's inference reads from ``ckpt_dir``.
INFERENCE_FILES: dict[str, tuple[str, ...]] = {
    "ventricle_mask_ldm": (
        "model_autoencoder.pt", "model.pt", "ventricle_normaliser.json", "latent_scaler.json", "grid.json",
    ),
    "spade_mri_ldm": ("model_autoencoder.pt", "model.pt", "latent_scaler.json"),
    "slice_based_ldm_brats": (
        "model_autoencoder.pt", "model.pt", "latent_scaler.json", "grid.json", "training_conditions.json",
    ),
}  # fmt: skip


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def training_commands(
    preset: str,
    overrides: dict[str, Any],
    datalist: str = "<datalist>",
    continuations: list[dict[str, Any]] | None = None,
) -> list[str]:
    """The training commands of a recipe, as run from the bundle's folder: autoencoder, diffusion,
    then one resumed diffusion run per continuation (its values over ``overrides``)."""

    def flags(values: dict[str, Any]) -> str:
        return " ".join(f"--{key} {value}" for key, value in values.items())

    run = "python -m monai.bundle run --config_file"
    stage_1 = "'configs/train_autoencoder.yaml'"
    preset_file = f"'configs/presets/{preset}.yaml'"
    autoencoder = f'{run} "[{stage_1},{preset_file}]"'
    diffusion = f"{run} \"[{stage_1},'configs/train_diffusion.yaml',{preset_file}]\""
    steps = [{}, *(continuations or [])]
    return [
        f"{autoencoder} --datalist {datalist} {flags(overrides)}".strip(),
        *(f"{diffusion} --datalist {datalist} {flags({**overrides, **step})}".strip() for step in steps),
    ]


def make_starter_weights(
    bundle: str,
    models_dir: str,
    preset: str,
    overrides: dict[str, Any] | None = None,
    data: str = "",
    datalist: str = "<datalist>",
    precision: str = "fp16",
    output: str | None = None,
    continuations: list[dict[str, Any]] | None = None,
    ledger: dict[str, Any] | None = None,
) -> str:
    """Write ``bundles/<bundle>/starter/`` (or ``--output``) from a trained models folder.

    Args:
        bundle: ``ventricle_mask_ldm``, ``spade_mri_ldm`` or ``slice_based_ldm_brats``.
        models_dir: the trained models folder (the bundle's ``ckpt_dir``).
        preset: the preset the models were trained with (``configs/presets/<preset>.yaml``).
        overrides: config values given on the training command lines (the recipe).
        data: the command that made the training data (provenance).
        datalist: the training datalist given on the command lines (provenance).
        precision: ``fp16`` (default, halves the files) or ``fp32``.
        output: folder to write (default: the bundle's ``starter/``).
        continuations: the diffusion runs resumed after the first, in order, each a dict of the
            config values it changed (e.g. ``"[{'diffusion_epochs': 350, 'tumour_loss_weight': 5}]"``).
        ledger: per training stage, the demo recipe of its data (``{'autoencoder': {...}, 'diffusion': {...}}``);
            its subjects and quantity range go into the manifest.

    Returns:
        The folder written.
    """
    if bundle not in INFERENCE_FILES or bundle not in BUNDLE_STUDIES:
        raise InputError(f"bundle: unknown '{bundle}', expected one of {', '.join(INFERENCE_FILES)}")
    if ledger is not None and not isinstance(ledger, dict):
        raise InputError(f"--ledger: expected a dict of stage -> data recipe, got {ledger!r}")
    if not (ROOT / "bundles" / bundle / "configs" / "presets" / f"{preset}.yaml").is_file():
        raise InputError(f"--preset: bundles/{bundle}/configs/presets/{preset}.yaml does not exist")
    if overrides is not None and not isinstance(overrides, dict):
        raise InputError(f"--overrides: expected a dict of config values, got {overrides!r}")
    overrides = dict(overrides or {})
    if continuations is not None and (
        not isinstance(continuations, (list, tuple)) or not all(isinstance(step, dict) for step in continuations)
    ):
        raise InputError(f"--continuations: expected a list of dicts of config values, got {continuations!r}")
    continuations = [dict(step) for step in continuations or []]
    import torch

    provenance = {
        "data": data,
        "training_commands": training_commands(preset, overrides, datalist, continuations),
        "commit": _commit(),
        "made": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "made_by": "python scripts/make_starter_weights.py " + bundle,
    }
    folder = Path(output) if output else ROOT / "bundles" / bundle / STARTER_FOLDER
    write_starter_weights(
        models_dir, folder, bundle, INFERENCE_FILES[bundle], preset, overrides, provenance, precision, continuations
    )
    if ledger is not None:
        record_ledger(bundle, ledger, str(folder))
    print(folder)
    return str(folder)


if __name__ == "__main__":
    run_cli(make_starter_weights)
