"""``scripts/record_starter_ledger.py``: write the data ledger of starter weights into their manifest."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from shared.io import InputError
from shared.workflow.demo_recipes import DemoRecipe
from shared.workflow.starter_weights import (
    STARTER_FOLDER,
    measure_starter_ledger,
    read_starter_manifest,
    record_starter_ledger,
)

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
