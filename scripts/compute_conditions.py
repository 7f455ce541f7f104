"""Conditioning tables (docs/method.md, section 1) for any FreeSurfer/SynthSeg label maps or tumour masks.

Usage::

    # ventricle volume, ICV, ratio and c; fits the min-max normaliser and saves it beside the CSV
    python scripts/compute_conditions.py ventricles <folder | datalist.json | file> --output ventricles.csv
    # apply an existing (training-set) normaliser instead of fitting one
    python scripts/compute_conditions.py ventricles new_maps/ --output new.csv --normaliser ventricles_normaliser.json
    # tumour 9-vector (voxels > 0 are tumour), normalised; raw volume/area and volume in mL too
    python scripts/compute_conditions.py tumours <folder | datalist.json | file> --output tumours.csv

Inputs: ``.nii``, ``.nii.gz`` or ``.mgz``; from a datalist the ``--key`` field (default
``label``) of every item in every section. Bad files stop the run with one line naming them.
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.conditioning.tables import write_tumour_table, write_ventricle_table

if __name__ == "__main__":
    run_cli({"ventricles": write_ventricle_table, "tumours": write_tumour_table})
