"""Tissue contrast of generated images against real ones: mean intensity per tissue, a table and a plot.

Usage (from the project root)::

    python scripts/image_fidelity.py --real outputs/demo/data/brains/datalist.json \
        --generated bundles/spade_mri_ldm/generated --output_dir outputs/fidelity

``--real``: a MONAI datalist of image + label pairs; ``--generated``: a pair folder (or its
``manifest.csv``) written by ``spade_mri_ldm`` inference or ``scripts/generate_pairs.py``.
Writes ``fidelity.csv`` (tissue, real and generated mean +- SD, counts) and ``fidelity.png``.
Images are scaled by their 0.5 / 99.5 percentiles to [0, 1] first, as in training.
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.evaluation.fidelity import write_fidelity_report

if __name__ == "__main__":
    run_cli(write_fidelity_report, name="image_fidelity")
