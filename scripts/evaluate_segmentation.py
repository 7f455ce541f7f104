"""Dice, IoU and volume error of any segmenter's predictions (nnU-Net or another tool) against ground truth.

Usage (from the project root)::

    # several models, each a folder of predicted label maps named like the truth files
    python scripts/evaluate_segmentation.py --truth outputs/x/labelsTs \\
        --predictions "{'real': 'pred_real', 'augmented': 'pred_aug'}" --output_dir outputs/x/eval
    # one folder (model name = folder name); only label 1 is foreground; split the summary at 100 mL
    python scripts/evaluate_segmentation.py --truth datalist.json --predictions pred_real --output_dir eval \\
        --labels 1 --volume_threshold_ml 100
    # add the violin plot of each variant's training-set volumes
    python scripts/evaluate_segmentation.py --truth labelsTs --predictions "{'real': 'pred_real'}" --output_dir eval \\
        --training "{'real': 'nnUNet_raw/Dataset501_real/labelsTr', 'augmented': 'nnUNet_raw/Dataset502_aug/labelsTr'}"

Cases are matched by file name without ``.nii`` / ``.nii.gz`` / ``.mgz``; a truth case without a
prediction stops the run, extra predictions are ignored with a warning. Writes ``per_case.csv``,
``summary.csv`` and ``summary.md`` (mean +- SD for all cases and by truth volume), ``errors.png``
and, with ``--training``, ``training_volumes.png``. Bad input stops with one line naming the file.
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.evaluation.segmentation_metrics import evaluate_segmentation

if __name__ == "__main__":
    run_cli(evaluate_segmentation, name="evaluate_segmentation")
