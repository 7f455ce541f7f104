"""Generate labelled pairs in rounds until enough of them pass quality control.

Round ``k`` asks a generator for the pairs still missing (as ``rounds/round_<k>/``, with its
own ``manifest.csv``), checks each with :mod:`shared.workflow.pair_qc`, and stops when ``n_wanted``
pairs were accepted or after ``max_rounds`` rounds. The folder's ``manifest.csv`` then lists
*every* candidate, accepted or not, with ``round``, ``case``, ``qc_status`` and ``qc_reason``
(paths relative to the folder, into the rounds; ``case`` is the file's name, ``r<k>_<name>`` for
round ``k >= 1``, so that nnU-Net case names stay unique; set assembly takes only the accepted
rows), and ``qc.json`` sums up the rejections. ``mosaic.png`` shows accepted pairs.

The round folders are kept: a rerun (after Ctrl-C, or with other QC tolerances) asks each round
for the same samples again, and the generators skip every sample they finished with the same
settings and weights (their per-sample records), so only what changed is generated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.io import InputError, load_image, load_label_map, read_csv, write_csv, write_json
from shared.workflow.pair_qc import ACCEPTED, TumourQC, VentricleQC, check_manifest, rejection_counts

logger = logging.getLogger(__name__)

#: ``generate(round_folder, count, seed, requests)`` -> the round's manifest. ``requests`` are
#: the requests to repeat (ventricles: the rejected pairs' ``c``), or ``None`` for fresh ones.
Generator = Callable[[Path, int, int, Sequence[float] | None], Path]


def generate_with_qc(
    output_dir: str | Path,
    generate: Generator,
    kind: str,
    qc: VentricleQC | TumourQC,
    n_wanted: int,
    seed: int,
    max_rounds: int = 3,
    first_requests: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Run rounds of ``generate`` + QC into ``output_dir``; returns the QC summary (``qc.json``).

    Round ``k`` uses seed ``seed + 1000 * k``. Ventricle rounds repeat the rejected requests
    (the same ``c``, new noise); tumour rounds draw new random conditions.
    """
    if n_wanted < 1 or max_rounds < 1:
        raise InputError(f"n_wanted and max_rounds must be at least 1, got {n_wanted} and {max_rounds}")
    output_dir = Path(output_dir)
    rounds_dir = output_dir / "rounds"
    rows: list[dict[str, Any]] = []
    accepted = 0
    requests: Sequence[float] | None = first_requests
    for k in range(max_rounds):
        missing = n_wanted - accepted
        if missing <= 0:
            break
        folder = rounds_dir / f"round_{k}"
        manifest = generate(folder, missing, seed + 1000 * k, requests)
        checked = check_manifest(manifest, kind, qc)
        for row in checked:
            row["round"] = k
            stem = Path(row["label"]).name.split(".")[0]
            row["case"] = stem if k == 0 else f"r{k}_{stem}"  # unique across rounds: nnU-Net case names
            for key in ("image", "label"):
                row[key] = str((folder / row[key]).relative_to(output_dir))
        rows += checked
        good = [row for row in checked if row["qc_status"] == ACCEPTED]
        accepted += len(good)
        logger.info("QC round %d: %d of %d accepted (%d of %d wanted)", k, len(good), len(checked), accepted, n_wanted)
        requests = (
            [float(row["requested_c"]) for row in checked if row["qc_status"] != ACCEPTED]
            if kind == "ventricles"
            else None
        )
    # keep exactly n_wanted accepted pairs; surplus ones (none unless a generator over-delivers) are marked
    kept = 0
    for row in rows:
        if row["qc_status"] == ACCEPTED:
            kept += 1
            if kept > n_wanted:
                row["qc_status"], row["qc_reason"] = "surplus", "more accepted pairs than wanted"
    columns = list(dict.fromkeys(["image", "label", "round", "case", *[c for r in rows for c in r]]))
    write_csv(output_dir / "manifest.csv", rows, columns)
    first_round = [row for row in rows if row["round"] == 0]
    summary = {
        "wanted": n_wanted,
        "candidates": len(rows),
        "accepted": min(accepted, n_wanted),
        "rejected": sum(row["qc_status"] == "rejected" for row in rows),
        "rounds": 1 + max(int(row["round"]) for row in rows),
        "first_round_candidates": len(first_round),
        "first_round_accepted": sum(row["qc_status"] == ACCEPTED for row in first_round),
        "reasons": rejection_counts(rows),
    }
    write_json(output_dir / "qc.json", summary)
    _save_accepted_mosaic(output_dir, [row for row in rows if row["qc_status"] == ACCEPTED], kind)
    if summary["accepted"] < n_wanted:
        logger.warning("QC: only %d of %d pairs accepted after %d rounds", summary["accepted"], n_wanted, max_rounds)
    return summary


def accepted_rows(manifest: str | Path) -> list[dict[str, str]]:
    """Rows of a manifest that QC accepted (all rows of a manifest without QC columns)."""
    return [row for row in read_csv(manifest) if row.get("qc_status", ACCEPTED) == ACCEPTED]


def _save_accepted_mosaic(output_dir: Path, rows: list[dict[str, Any]], kind: str, count: int = 4) -> None:
    """``mosaic.png`` of up to ``count`` accepted pairs spread over their requests."""
    from shared.viz import MosaicCase, save_label_mosaic

    if not rows:
        return
    key = "requested_c" if kind == "ventricles" else "requested_volume"
    order = np.argsort([float(row.get(key, 0) or 0) for row in rows])
    shown = sorted({int(order[int(round(i))]) for i in np.linspace(0, len(rows) - 1, min(count, len(rows)))})
    cases = []
    for index in shown:
        row = rows[index]
        image, label = load_image(output_dir / row["image"]), load_label_map(output_dir / row["label"])
        values = image.array.astype(np.float32)
        low, high = np.percentile(values, [1, 99])
        title = f"{Path(row['label']).name} {key.removeprefix('requested_')} {float(row.get(key, 0) or 0):.2f}"
        cases.append(
            MosaicCase(np.clip((values - low) / max(high - low, 1e-6), 0, 1), label.array, image.spacing, title)
        )
    save_label_mosaic(output_dir / "mosaic.png", cases, focus="labels")
