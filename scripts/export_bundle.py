"""Export a bundle as a MONAI model-zoo zip that runs without this repository.

    python scripts/export_bundle.py ventricle_mask_ldm --models bundles/ventricle_mask_ldm/starter \\
        --output exports/ventricle_mask_ldm.zip

The zip holds ``<bundle>/`` with ``configs/`` (the weights' recipe baked into the top-level keys),
``docs/``, ``LICENSE``, ``models/`` (the weights and the statistics inference reads),
``scripts/`` (the run-time code the configs use, vendored: ``$import scripts``), ``metadata.json``
with every pip package the code imports, and ``large_files.yml`` (sha256 of each model file).
A zoo user runs it with only the pip packages installed::

    unzip ventricle_mask_ldm.zip && cd ventricle_mask_ldm
    python -m monai.bundle run --config_file configs/inference.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.cli.runner import run_cli
from shared.export.bundle_export import export_bundle
from shared.io import InputError

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ("ventricle_mask_ldm", "spade_mri_ldm", "slice_based_ldm_brats")


def main(
    bundle: str,
    models: str,
    output: str,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """Write the model-zoo zip of one bundle.

    Args:
        bundle: ``ventricle_mask_ldm``, ``spade_mri_ldm`` or ``slice_based_ldm_brats``.
        models: the trained models folder (the bundle's ``ckpt_dir``), or its ``starter/`` folder,
            whose ``manifest.json`` gives the recipe (preset, overrides, continuations).
        output: the ``.zip`` to write (replaced atomically when the export succeeds).
        preset: the preset the weights were trained with (default: the manifest's; none without one).
        overrides: config values the weights were trained with over the preset, e.g.
            ``"{'diffusion_epochs': 260}"`` (default: the manifest's).

    Returns:
        The zip written.
    """
    if bundle not in BUNDLES:
        raise InputError(f"bundle: unknown {bundle!r}, expected one of {', '.join(BUNDLES)}")
    if overrides is not None and not isinstance(overrides, dict):
        raise InputError(f"--overrides: expected a dict of config values, got {overrides!r}")
    summary = export_bundle(ROOT / "bundles" / bundle, models, output, preset, overrides)
    print(f"{bundle}: {summary['modules']} run-time modules vendored as scripts/, recipe preset {summary['preset']}")
    return summary["output"]


if __name__ == "__main__":
    run_cli(main)
