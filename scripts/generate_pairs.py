"""N labelled pairs with a requested ventricle-size distribution: ventricle_mask_ldm, then spade_mri_ldm.

Usage (from the project root, both bundles trained; see their docs)::

    python scripts/generate_pairs.py --output_dir outputs/pairs --num_samples 20 --conditions "{'uniform':[0.5,1.2]}"
    python scripts/generate_pairs.py --output_dir outputs/pairs --num_samples 8 --preset demo --guidance_scale 4
    python scripts/generate_pairs.py --output_dir outputs/big --num_samples 50 \
        --conditions "{'volumes_ml':[80,150],'icv_ml':1450}"

Writes ``<output_dir>/images/pair_XXXX.nii.gz``, ``labels/pair_XXXX.nii.gz`` (same affine),
``manifest.csv`` (image, label, source map, seed, requested c and achieved ventricle volume) and
``mosaic.png``; the raw label maps and their manifest stay in ``<output_dir>/label_maps``. A
failing stage stops with one line naming the bundle and its error.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

from shared.cli.runner import run_cli
from shared.workflow.chaining import generate_pairs

ROOT = Path(__file__).resolve().parents[1]

#: The bundles of this script's checkout, wherever the package happens to be installed from.
BUNDLES = {"mask_bundle": ROOT / "bundles" / "ventricle_mask_ldm", "spade_bundle": ROOT / "bundles" / "spade_mri_ldm"}


@functools.wraps(generate_pairs)
def main(*args, **kwargs):
    bound = inspect.signature(generate_pairs).bind_partial(*args, **kwargs)
    for name, folder in BUNDLES.items():
        bound.arguments.setdefault(name, folder)
    return generate_pairs(*bound.args, **bound.kwargs)


if __name__ == "__main__":
    run_cli(main, name="generate_pairs")
