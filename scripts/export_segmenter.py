"""Export a trained nnU-Net v2 model as a MONAI segmentation bundle (zoo layout, MONAI Label infer keys).

    M=outputs/study/nnunet/nnUNet_results/Dataset503_DemoVentriclesAugmented
    python scripts/export_segmenter.py $M/nnUNetTrainer__nnUNetPlans__3d_fullres --output exports/segmenter.zip

Then, with only the pip packages installed::

    unzip ventricle_segmenter.zip && cd nnunet_segmenter
    python -m monai.bundle run --config_file configs/inference.yaml --dataset_dir /path/to/images

which writes ``eval/<image>_seg.nii.gz``. ``configs/inference.yaml`` has the keys MONAI Label's bundle
infer task reads (``network_def``, ``preprocessing``, ``inferer``, ``postprocessing``, ``models/model.pt``).
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.export.segmenter_export import export_segmenter


def main(model_folder: str, output: str, fold: str = "all", checkpoint: str = "checkpoint_final.pth") -> str:
    """Write the bundle zip of one trained nnU-Net model.

    Args:
        model_folder: ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>`` of a trained model.
        output: the ``.zip`` to write (replaced atomically when the export succeeds).
        fold: the fold whose weights to export: ``all`` (the study's) or ``0``-``4``.
        checkpoint: the checkpoint in ``fold_<fold>`` (``checkpoint_final.pth``; ``checkpoint_best.pth``).

    Returns:
        The zip written.
    """
    summary = export_segmenter(model_folder, output, str(fold), checkpoint)
    print(f"nnU-Net {summary['configuration']} model, patch {summary['patch_size']} -> {summary['output']}")
    return summary["output"]


if __name__ == "__main__":
    run_cli(main)
