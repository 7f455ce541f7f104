"""The data ledgers of starter weights: measured from their recipes, recorded in and read from their manifests.

``scripts/record_starter_ledger.py`` (:func:`record_ledger`) draws every training stage's data
again and writes which subjects it learnt from into the starter manifest's ``ledger``;
:func:`read_starter_ledgers` gives them to the study design.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.export.starter_weights import MANIFEST, STARTER_FOLDER, read_starter_manifest
from shared.io import InputError, write_json
from shared.workflow.demo_recipes import DemoRecipe
from shared.workflow.ledger import Ledger, datalist_ledger

ROOT = Path(__file__).resolve().parents[2]

#: The study each generator bundle serves, and its name in ledgers and reports.
BUNDLE_STUDIES: dict[str, tuple[str, str]] = {
    "ventricle_mask_ldm": ("ventricles", "mask LDM"),
    "spade_mri_ldm": ("ventricles", "SPADE LDM"),
    "slice_based_ldm_brats": ("tumours", "slice LDM"),
}


def record_ledger(bundle: str, stages: dict[str, Any], folder: str | None = None) -> str:
    """Record which subjects each training stage of a bundle's starter weights learnt from.

    The data of every stage is drawn again from its demo recipe (byte-identical to what the
    stage was trained on), and its subject ids, their count and the range of the study's
    quantity (ventricle or tumour mL) are written into the starter manifest's ``ledger``.

    Args:
        bundle: ``ventricle_mask_ldm``, ``spade_mri_ldm`` or ``slice_based_ldm_brats``.
        stages: ``{stage: recipe}``, e.g. ``"{'autoencoder': {'kind': 'brains', 'n_cases': 96,
            'shape': [32, 32, 32], 'seed': 0, 'validation_fraction': 0.1, 'low': 1.0, 'high': 5.0}}"``
            (fields of ``shared.workflow.demo_recipes.DemoRecipe``).
        folder: the starter folder (default: ``bundles/<bundle>/starter``).

    Returns:
        The manifest written.
    """
    if bundle not in BUNDLE_STUDIES:
        raise InputError(f"bundle: unknown '{bundle}', expected one of {', '.join(BUNDLE_STUDIES)}")
    if not isinstance(stages, dict) or not stages or not all(isinstance(v, dict) for v in stages.values()):
        raise InputError(f"--stages: expected a dict of stage -> data recipe, got {stages!r}")
    study, name = BUNDLE_STUDIES[bundle]
    target = Path(folder) if folder else ROOT / "bundles" / bundle / STARTER_FOLDER
    for recipe in stages.values():  # every recipe and the manifest checked before any data is drawn
        DemoRecipe.from_params(recipe)
    read_starter_manifest(target)
    with tempfile.TemporaryDirectory(prefix="starter-ledger-") as scratch:
        ledger = measure_starter_ledger(stages, study, name, scratch)
    return str(record_starter_ledger(target, ledger))


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
    entries = {}
    for stage, params in stages.items():
        recipe = DemoRecipe.from_params(params)
        datalist = recipe.write(Path(work_dir) / stage)
        ledger = datalist_ledger(f"{model_name} {stage}", study, datalist, source=_recipe_words(recipe))
        if list(ledger.training) != sorted(recipe.subjects()["training"]):
            raise InputError(f"{datalist}: its subjects are not those of the recipe {recipe.params()}")
        entries[stage] = {"data": recipe.params(), **ledger.to_json()}
    return entries


def _recipe_words(recipe: DemoRecipe) -> str:
    what = "demo brains" if recipe.kind == "brains" else "demo tumour cases"
    extra = f", prepared to {'x'.join(str(n) for n in recipe.prepared_shape)}" if recipe.prepared_shape else ""
    return f"{recipe.n_cases} {what}, seed {recipe.seed}{extra}"


def record_starter_ledger(folder: str | os.PathLike, ledger: Mapping[str, Any]) -> Path:
    """Write ``ledger`` (:func:`measure_starter_ledger`) into a starter folder's manifest (the weights stay)."""
    path = Path(folder) / MANIFEST
    manifest = read_starter_manifest(folder)
    manifest[LEDGER_KEY] = dict(ledger)
    return write_json(path, manifest)


def read_starter_ledgers(folder: str | os.PathLike) -> list[tuple[str, Ledger, DemoRecipe]]:
    """``[(stage, Ledger, DemoRecipe), ...]`` of a starter folder, in training order.

    Raises:
        InputError: the manifest has no ledger (starter weights of unknown data cannot be a study's control).
    """
    manifest = read_starter_manifest(folder)
    entries = manifest.get(LEDGER_KEY)
    if not isinstance(entries, dict) or not entries:
        raise InputError(
            f"{Path(folder) / MANIFEST}: no '{LEDGER_KEY}' of the data its stages learnt from; "
            "record it with scripts/make_starter_weights.py --ledger"
        )
    return [(stage, Ledger.from_json(entry), DemoRecipe.from_params(entry["data"])) for stage, entry in entries.items()]
