"""``report.html``: the report to look at, written by the report stage beside ``report.md``.

The page is ``report.md`` rendered (the answer, the tables, sortable by a click on a header, and
the plots) followed by 3D viewers, per study:

- every generated pair QC accepted, and a few it rejected with their reason: the image with its
  label map (or tumour mask) as overlay;
- every hold-out case: the image with its truth, beside the predictions of the nnU-Net variants
  (first seed), each panel choosing its variant.

The viewers are NiiVue (``@niivue/niivue``, pinned in ``scripts/report_viewer``; ``scripts/setup_env.sh``
bundles it into one script, ``.venv/report_viewer/niivue.js``). The report stage copies that script to
``<output>/report_assets/``, so the page needs no network; the volumes are the run's own NIfTI files,
referenced by relative paths, not copied. A browser reads them only when the folder is served
(``python -m http.server``): a page opened as a file shows the text, tables and plots, and says so
where the viewers would be.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.io import atomic_path, read_csv, read_json
from shared.labels import SYNTHSEG_CLASSES
from shared.workflow.chaining import ROOT
from shared.workflow.settings import StudySettings
from shared.workflow.stages import STUDY_SETS, generated_dir, prediction_folder, results_folder, variant_dataset_folders

logger = logging.getLogger(__name__)

#: Where the page's own files live in the output folder.
ASSETS = "report_assets"
#: An environment variable naming another NiiVue bundle (one classic script defining ``niivue``).
VIEWER_BUNDLE_ENV = "REPORT_VIEWER_JS"
#: The bundle ``scripts/setup_env.sh`` builds.
DEFAULT_VIEWER_BUNDLE = ROOT / ".venv" / "report_viewer" / "niivue.js"
PAGE_FILES = Path(__file__).parent / "report_page"
#: QC-rejected pairs shown per study (the first ones, each with its reason).
REJECTED_SHOWN = 4
TUMOUR_LABELS = {0: "background", 1: "whole tumour"}


def viewer_bundle() -> Path | None:
    """The NiiVue script to serve (``$REPORT_VIEWER_JS`` or the one setup built); ``None`` when absent."""
    path = Path(os.environ.get(VIEWER_BUNDLE_ENV) or DEFAULT_VIEWER_BUNDLE)
    return path if path.is_file() else None


def install_viewer(output_dir: Path) -> bool:
    """Copy the NiiVue script into ``<output_dir>/report_assets/``; False (a warning) when setup did not build it."""
    bundle = viewer_bundle()
    if bundle is None:
        logger.warning("report.html: no NiiVue bundle (%s); run scripts/setup_env.sh for the 3D viewers",
                       DEFAULT_VIEWER_BUNDLE)  # fmt: skip
        return False
    target = output_dir / ASSETS / "niivue.js"
    if not target.is_file() or target.read_bytes() != bundle.read_bytes():
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as temporary:
            shutil.copyfile(bundle, temporary)
    return True


def _relative(path: Path, output_dir: Path) -> str:
    return Path(os.path.relpath(path, output_dir)).as_posix()


def pair_entries(output_dir: Path, study: str) -> list[dict[str, str]]:
    """Accepted pairs, then the first :data:`REJECTED_SHOWN` rejected ones.

    Returns ``{name, image, label, status, reason, labels}`` per pair (``labels``: which label list names its ids).
    """
    folder = generated_dir(output_dir, study)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        return []
    rows = read_csv(manifest)
    accepted = [row for row in rows if row.get("qc_status", "accepted") == "accepted"]
    rejected = [row for row in rows if row.get("qc_status") == "rejected"][:REJECTED_SHOWN]
    entries = []
    for row in [*accepted, *rejected]:
        name = Path(row["image"]).name.removesuffix(".nii.gz")
        status = row.get("qc_status", "accepted")
        reason = f" ({row['qc_reason']})" if row.get("qc_reason") else ""
        words = f"round {row.get('round', '0')}, {name}: {status}{reason}"
        entries.append({
            "name": words, "image": _relative(folder / row["image"], output_dir),
            "label": _relative(folder / row["label"], output_dir), "status": status, "reason": row.get("qc_reason", ""),
            "labels": "pairs",
        })  # fmt: skip
    return entries


def holdout_entries(output_dir: Path, study: str, variants: Sequence[str]) -> list[dict[str, Any]]:
    """Each hold-out case: ``{case, image, truth, predictions: {variant: path}}`` (first seed's predictions)."""
    _, base_id, name, _ = STUDY_SETS[study]
    nnunet = output_dir / "nnunet"
    folders = variant_dataset_folders(nnunet / "nnUNet_raw", base_id, name, tuple(variants))
    with_test = [folder for folder in folders.values() if (folder / "labelsTs").is_dir()]
    if not with_test:
        return []
    raw = with_test[0]
    results = results_folder(nnunet, 0)
    entries = []
    for truth in sorted((raw / "labelsTs").glob("*.nii.gz")):
        case = truth.name.removesuffix(".nii.gz")
        predictions = {}
        for variant, folder in folders.items():
            prediction = prediction_folder(results, folder) / truth.name
            if prediction.is_file():
                predictions[variant] = _relative(prediction, output_dir)
        entries.append({
            "case": case, "image": _relative(raw / "imagesTs" / f"{case}_0000.nii.gz", output_dir),
            "truth": _relative(truth, output_dir), "predictions": predictions,
        })  # fmt: skip
    return entries


def label_lists(output_dir: Path, study: str, variants: Sequence[str]) -> dict[str, dict[int, str]]:
    """Names of the label ids: ``pairs`` (the generated label maps) and ``segmentation`` (nnU-Net's classes)."""
    pairs = dict(SYNTHSEG_CLASSES) if study == "ventricles" else dict(TUMOUR_LABELS)
    _, base_id, name, foreground = STUDY_SETS[study]
    segmentation = {0: "background", 1: foreground.replace("_", " ")}
    folders = variant_dataset_folders(output_dir / "nnunet" / "nnUNet_raw", base_id, name, tuple(variants))
    for folder in folders.values():
        if (folder / "dataset.json").is_file():
            labels = read_json(folder / "dataset.json")["labels"]
            segmentation = {int(i): label.replace("_", " ") for label, i in labels.items()}
            break
    return {"pairs": pairs, "segmentation": segmentation}


def viewer_data(output_dir: Path, settings: StudySettings, studies: Sequence[str]) -> dict[str, Any]:
    """What the page's viewers show (see the module docstring); paths relative to ``output_dir``."""
    entries = []
    for study in studies:
        variants = settings.trained_variants(study)
        holdout = holdout_entries(output_dir, study, variants)
        entries.append({
            "study": study, "pairs": pair_entries(output_dir, study), "holdout": holdout,
            "variants": [v for v in variants if any(v in item["predictions"] for item in holdout)],
            "label_lists": label_lists(output_dir, study, variants),
        })  # fmt: skip
    return {"studies": entries}


def _viewer_section(data: dict[str, Any]) -> str:
    parts = ['<section class="viewers">', "<h2>Look at the data: generated pairs and hold-out predictions in 3D</h2>",
             '<p id="viewer-status">Loading the viewers...</p>']  # fmt: skip
    for study in data["studies"]:
        accepted = sum(pair["status"] == "accepted" for pair in study["pairs"])
        parts += [
            f"<h3>{html.escape(study['study'].capitalize())}</h3>",
            f"<p>{accepted} accepted pairs and {len(study['pairs']) - accepted} rejected by QC (with the reason); "
            f"{len(study['holdout'])} hold-out cases with the truth beside the variants' predictions (first seed). "
            "Click a slice to move the crosshair; scroll to move through slices.</p>",
            f'<div class="viewer-study" id="viewer-{html.escape(study["study"])}"></div>',
        ]
    return "\n".join([*parts, "</section>"])


def write_report_html(
    output_dir: Path, report_markdown: str, settings: StudySettings, studies: Sequence[str]
) -> Path:  # fmt: skip
    """``<output_dir>/report.html`` from the report's Markdown and the run's files (see the module docstring)."""
    import markdown

    with_viewer = install_viewer(output_dir)
    body = markdown.markdown(report_markdown, extensions=["tables"])
    data = viewer_data(output_dir, settings, studies)
    payload = json.dumps(data).replace("</", "<\\/")
    title = html.escape(report_markdown.splitlines()[0].lstrip("# ") if report_markdown else "Report")
    css, script = (PAGE_FILES / "report.css").read_text(), (PAGE_FILES / "viewer.js").read_text()
    niivue = [f'<script src="{ASSETS}/niivue.js"></script>'] if with_viewer else []
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<link rel="icon" href="data:,">', f"<title>{title}</title>",  # no favicon request
        f"<style>\n{css}</style>", "</head>", "<body>", body, _viewer_section(data),
        f'<script id="viewer-data" type="application/json">{payload}</script>', *niivue,
        f"<script>\n{script}</script>", "</body>", "</html>", "",
    ])  # fmt: skip
    path = output_dir / "report.html"
    with atomic_path(path) as temporary:
        temporary.write_text(page)
    return path
