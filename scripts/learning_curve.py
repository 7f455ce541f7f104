"""nnU-Net's learning curve on a validation split of a study's real training subjects.

Usage (from the project root)::

    python scripts/learning_curve.py ventricles --output_dir outputs/learning_curve_ventricles
    python scripts/learning_curve.py tumours --output_dir outputs/learning_curve_tumours --iterations 100,200,300,400

Draws the study's real training set as ``--scale`` does (never its hold-out), holds back its last
``--validation_subjects`` subjects, trains nnU-Net on the others once per schedule and scores each
on the held-back cases. The main command's nnU-Net schedules (``SCALES``) were chosen this way
(README, "nnU-Net on a CPU schedule").
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.workflow.learning_curve import learning_curve

if __name__ == "__main__":
    run_cli(learning_curve, name="learning_curve")
