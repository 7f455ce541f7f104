"""Check a demo run's figures (``<output_dir>/figures.json``) against the demo's thresholds.

Usage::

    python scripts/check_demo_report.py outputs/demo

Prints each figure that misses its threshold (real models' hold-out Dice: ventricles >= 0.80,
tumours >= 0.60; generated brains' ICV within 0.7-1.4x of the real median; Spearman rho of
requested against achieved volume >= 0.7 for ventricles and >= 0.6 for tumours; >= 90 %
non-empty tumour masks) and exits 1 if any does, 0 when all are met. CI runs it after the
main command.
"""

from __future__ import annotations

import sys
from pathlib import Path

from shared.cli import run_cli
from shared.io import read_json
from shared.pipeline import check_demo_figures


def check_demo_report(output_dir: str = "outputs/demo") -> None:
    """Check ``<output_dir>/figures.json``; exit 1 listing every missed threshold.

    Args:
        output_dir: the main command's output folder.
    """
    figures = read_json(Path(output_dir) / "figures.json")
    failures = check_demo_figures(figures)
    for line in failures:
        print(f"below threshold: {line}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"{output_dir}: every demo threshold met")


if __name__ == "__main__":
    run_cli(check_demo_report)
