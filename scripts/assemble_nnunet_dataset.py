"""nnU-Net v2 raw datasets (real / synthetic / augmented) from real and generated pairs.

Usage::

    # the three variants at once, ids 501, 502, 503 (Dataset501_VentriclesReal, ...Synthetic, ...Augmented)
    python scripts/assemble_nnunet_dataset.py variants --dataset_id 501 --name Ventricles \\
        --real outputs/demo/data/brains/datalist.json --synthetic outputs/pairs \\
        --test outputs/demo/data/holdout --labels ventricles --ratio 1 --nnunet_raw outputs/nnunet/nnUNet_raw
    # one variant
    python scripts/assemble_nnunet_dataset.py dataset --variant augmented --dataset_id 511 --name Tumours \\
        --real prepared/datalist.json --synthetic eval/generated --labels whole_tumour --ratio 2

Sources (``--real``, ``--synthetic``, ``--test``): a datalist JSON, a ``manifest.csv`` of generated
pairs (or a folder holding one), or a folder with ``images/`` and ``labels/``. ``--labels``:
``ventricles``, ``whole_tumour``, ``binary`` or a JSON file ``{"name": [source ids], ...}``.
An existing dataset id is refused unless ``--overwrite``. Every pair is validated (same shape
and affine); cases are written by ``--num_workers`` processes.
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.segmentation.nnunet_dataset import assemble_dataset, assemble_variants

if __name__ == "__main__":
    run_cli({"variants": assemble_variants, "dataset": assemble_dataset})
