"""Plan, preprocess, train and predict with nnU-Net v2 on an assembled dataset (short schedules for CPUs).

Usage::

    # nnU-Net's folders under one root (or set nnUNet_raw / nnUNet_preprocessed / nnUNet_results yourself)
    python scripts/train_segmentation.py --dataset_id 501 --nnunet_root outputs/nnunet
    # a CPU demo: 5 epochs of 20 iterations, a quarter of the planned network width
    python scripts/train_segmentation.py --dataset_id 501 --nnunet_root outputs/nnunet --epochs 5 \\
        --iterations_per_epoch 20 --val_iterations_per_epoch 2 --width_factor 0.25
    # on a GPU with nnU-Net's full schedule
    python scripts/train_segmentation.py --dataset_id 501 --device cuda

Steps: fingerprint with nnU-Net's dataset integrity check, plans, preprocessing (skipped when
done for the same raw data), training of ``nnUNetTrainer`` on ``--fold`` (default ``all``;
skipped when ``checkpoint_final.pth`` exists, resumed from ``checkpoint_latest.pth``), and
prediction of ``imagesTs`` into ``<model folder>/predictions_Ts``. Prints the model and
prediction folders.
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.segmentation.nnunet_training import train_segmentation

if __name__ == "__main__":
    run_cli(train_segmentation)
