"""Quality against sampling steps for every solver of the three bundles (issue 18).

    python scripts/sampling_study.py outputs/sampling_study \
        --brains_datalist outputs/science32/datalist.json --tumours_datalist outputs/tumours_eval/datalist.json

Writes ``quality.csv``, ``quality.md`` (one table per bundle), ``quality_vs_seconds.png`` (and one
plot per bundle) and each setting's generated files under ``<output_dir>/<bundle>/<setting>/``.
See the README, "Fewer sampling steps", for the commands that make the real data.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.benchmarks.solver_quality import BUNDLES, STEP_GRID, run_study
from shared.bounds import Positive
from shared.cli.runner import run_cli

ROOT = Path(__file__).resolve().parents[1]


def main(
    output_dir: str,
    brains_datalist: str,
    tumours_datalist: str,
    bundles: tuple[str, ...] = BUNDLES,
    steps: Sequence[Positive] = STEP_GRID,
    mask_samples: Positive = 24,
    tumour_samples: Positive = 12,
    device: str = "cpu",
) -> str:
    """Generate every solver x steps setting with the bundles' starter weights and score it against DDIM 250.

    Args:
        output_dir: where the generated settings, ``quality.csv``, ``quality.md`` and the plot go.
        brains_datalist: datalist of real brains (``make_demo_data.py brains``); its ``validation``
            label maps are painted by the SPADE LDM and compared with their real images.
        tumours_datalist: datalist of real prepared tumour volumes (``prepare_tumour_data.py``),
            the unpaired Table-1 comparison of the slice-based LDM.
        bundles: which bundles to study, comma-separated or a list (default: all three).
        steps: the step counts of each solver (default 5, 10, 15, 20, 25).
        mask_samples: label maps generated per setting, c spread evenly over [0, 1] (default 24).
        tumour_samples: tumour pairs generated per setting, random consistent requests (default 12).
        device: cpu or cuda.
    """
    bundles = tuple(bundles.split(",")) if isinstance(bundles, str) else tuple(bundles)  # one word: one bundle
    steps = (steps,) if isinstance(steps, int) else tuple(steps)
    return str(
        run_study(
            output_dir, brains_datalist, tumours_datalist, bundles=bundles, steps=steps, mask_samples=mask_samples,
            tumour_samples=tumour_samples, device=device, project_root=ROOT,
        )
    )  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
