"""Quality control of generated labelled pairs: each pair's features against its request, and anatomy.

Usage::

    # ventricle pairs (generate_pairs.py output); ICV range from real brains: 0.7-1.4x their median
    python scripts/check_pairs.py ventricles outputs/pairs --reference_labels outputs/demo/data/brains/labels
    python scripts/check_pairs.py ventricles outputs/pairs --icv_range_ml 1000,2000 --max_c_error 0.25
    # tumour pairs (slice_based_ldm_brats inference output)
    python scripts/check_pairs.py tumours bundles/slice_based_ldm_brats/generated --max_volume_error 0.3

Writes ``qc_status`` and ``qc_reason`` into the folder's ``manifest.csv`` (or ``--output``)
and prints how many pairs were accepted and why the others were rejected. nnU-Net set
assembly (``scripts/assemble_nnunet_dataset.py``) then takes the accepted pairs only.

Tolerances (flags), ventricles: ``--max_c_error``, ``--icv_range_ml LOW,HIGH`` (or
``--reference_labels`` with ``--icv_tolerance``), ``--min_brain_component_fraction``,
``--min_ventricle_component_fraction``. Tumours: ``--max_volume_error``, ``--max_centre_error``,
``--max_tumour_components``, ``--min_piece_voxels``. Their defaults are those of
``shared.workflow.pair_qc.VentricleQC`` and ``TumourQC``, which the main command uses too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.bounds import PositiveFloat
from shared.cli.runner import run_cli
from shared.io import InputError
from shared.workflow.pair_qc import (
    ACCEPTED,
    KINDS,
    VentricleQC,
    check_manifest,
    qc_settings,
    rejection_counts,
    with_brain_reference,
)


def check_pairs(
    kind: str,
    folder: str,
    output: str | None = None,
    reference_labels: str | None = None,
    icv_tolerance: Sequence[PositiveFloat] = VentricleQC.icv_tolerance,
    reference_images: str | None = None,
    **tolerances: Any,
) -> dict[str, int]:
    """QC every pair of ``folder/manifest.csv``; returns the rejection counts by reason.

    Args:
        kind: ``ventricles`` or ``tumours``.
        folder: a generation folder with ``manifest.csv`` (or the manifest itself).
        output: where to write the checked manifest (default: rewrite it in place).
        reference_labels: real label maps (folder or datalist) whose median ICV sets the accepted range.
        icv_tolerance: factors on that median (ventricles only).
        reference_images: real images (a MONAI datalist, or a folder of images) whose brain volumes and
            slice-to-slice jumps set the brain-shape check (off without them).
        **tolerances: the QC tolerances above, by name (defaults: ``VentricleQC``, ``TumourQC``).
    """
    if kind not in KINDS:
        raise InputError(f"kind: unknown '{kind}', expected one of {', '.join(KINDS)}")
    if reference_labels is not None:
        if kind != "ventricles":
            raise InputError("--reference_labels: only for ventricle pairs")
        from shared.evaluation.segmentation_metrics import label_volumes_ml

        median = float(np.median(label_volumes_ml(reference_labels)))
        low, high = (float(f) for f in icv_tolerance)
        tolerances["icv_range_ml"] = (low * median, high * median)
    qc = qc_settings(kind, **tolerances)
    if reference_images is not None:
        from shared.io import resolve_volume_inputs

        qc = with_brain_reference(qc, resolve_volume_inputs(reference_images, key="image"))
    rows = check_manifest(folder, kind, qc, output)
    accepted = sum(row["qc_status"] == ACCEPTED for row in rows)
    counts = rejection_counts(rows)
    print(f"{accepted} of {len(rows)} pairs accepted")
    for reason, count in counts.items():
        print(f"  {reason}: {count}")
    return counts


if __name__ == "__main__":
    run_cli(check_pairs)
