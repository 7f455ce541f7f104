"""The main command: the whole pipeline on the built-in demo data, on a CPU.

Usage (from the project root)::

    python scripts/run_pipeline.py --output_dir outputs/demo
    python scripts/run_pipeline.py --output_dir outputs/demo --n_brains 40 --shape 96,112,96 --force

Stages (each skipped when it already finished with the same parameters):
demo brains and tumour cases -> conditioning tables (ventricle volume/ratio/c; tumour
9-vectors) with their normalisers -> ``report.md`` with a summary plot and mosaics.
"""

from __future__ import annotations

from shared.cli import run_cli
from shared.pipeline import run_demo_pipeline

if __name__ == "__main__":
    run_cli(run_demo_pipeline)
