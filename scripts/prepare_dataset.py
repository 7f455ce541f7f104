"""Bring your own dataset onto a working grid: BraTS, FreeSurfer, SynthSeg, datalist or CSV -> images, labels, datalist.

Usage (from the project root)::

    python scripts/prepare_dataset.py /data/subjects outputs/my_brains brains 96,112,96 2,2,2
    python scripts/prepare_dataset.py /data/BraTS2021 outputs/my_tumours tumours 120,120,78 2,2,2
    python scripts/prepare_dataset.py cases.csv outputs/my_brains brains 64,64,64 3,3,3 --skip_bad

The output (``images/``, ``labels/``, ``datalist.json`` with each case's subject, ``dataset.json``)
is what the other command lines and the bundles read. Layouts, label ids and the working grid:
docs/your_own_data.md.
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.datasets.working_set import write_working_set

if __name__ == "__main__":
    run_cli(write_working_set)
