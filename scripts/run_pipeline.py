"""The main command: the whole pipeline on the built-in demo data, on a CPU.

Usage (from the project root)::

    python scripts/run_pipeline.py --output_dir outputs/demo
    python scripts/run_pipeline.py --output_dir outputs/demo --n_brains 40 --shape 96,112,96 --force
    python scripts/run_pipeline.py --output_dir outputs/demo --branches none   # the data stages only
    python scripts/run_pipeline.py --study scripts/studies/demo.yaml          # the same as the first line

Stages (each skipped when it already finished with the same parameters): demo brains and
tumour cases -> conditioning tables -> the ventricle study (mask and SPADE bundles trained,
pairs generated towards enlarged ventricles, real / synthetic / augmented nnU-Net sets, small
nnU-Net models, hold-out evaluation) -> the tumour study (slice-based LDM, real / augmented
sets) -> ``report.md`` with tables and plots. ``--help`` lists every option.
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.workflow.pipeline import run_demo_pipeline

if __name__ == "__main__":
    run_cli(run_demo_pipeline)
