"""FLAIR + whole-tumour pairs on the working grid for ``slice_based_ldm_brats`` (docs/method.md, section 4).

Usage (from the project root)::

    # BraTS layout: one folder per case with *flair.nii.gz (or *t2f.nii.gz) and *seg.nii.gz
    python scripts/prepare_tumour_data.py /data/BraTS2021 outputs/brats_192 --shape 192,192,96
    # the built-in demo tumour cases (python scripts/make_demo_data.py tumours ...)
    python scripts/prepare_tumour_data.py outputs/demo/data/tumours/datalist.json out/t64 --shape 64,64,32

Writes ``images/`` (FLAIR scaled to [-1, 1]), ``labels/`` (whole tumour = seg > 0, as 0/1),
``datalist.json`` (each item with its normalised tumour vector ``condition``), ``tumours.csv``
and ``tumours_normaliser.json`` (fitted on the training split), ``dataset.json``.
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.tumour_preprocessing import prepare_tumour_dataset

if __name__ == "__main__":
    run_cli(prepare_tumour_dataset, name="prepare_tumour_data")
