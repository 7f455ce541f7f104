"""Fidelity of generated images: tissue contrast, and distances to real images as the field measures them.

Usage (from the project root)::

    python scripts/image_fidelity.py contrast --real outputs/demo/data/brains/datalist.json \
        --generated bundles/spade_mri_ldm/generated --output_dir outputs/fidelity
    python scripts/image_fidelity.py distances --generated outputs/study/generated/tumours \
        --real outputs/study/data/pool_tumours/datalist.json --output_dir outputs/fidelity_tumours --study tumours \
        --nnunet_model $M   # M: the real-data nnU-Net's model folder, e.g.
    # outputs/study/nnunet/nnUNet_results/Dataset511_DemoTumoursReal/nnUNetTrainer__nnUNetPlans__3d_fullres

``contrast``: mean intensity per tissue of real and generated images (``fidelity.csv``,
``fidelity.png``; images scaled by their 0.5 / 99.5 percentiles, as in training).
``distances``: Fréchet distance and MMD (3D with an nnU-Net model's encoder, 2.5D with a 2D network
trained on the real images' three planes) beside the real-vs-real baseline, MS-SSIM diversity, the
brain-shape check and the memorisation audit (``fidelity.csv``, ``fidelity.json``,
``memorisation.csv``). Generated folders are read through their ``manifest.csv`` (QC-rejected pairs
left out).
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.evaluation.fidelity import write_fidelity_report
from shared.evaluation.pair_fidelity import write_distance_report

if __name__ == "__main__":
    run_cli({"contrast": write_fidelity_report, "distances": write_distance_report}, name="image_fidelity")
