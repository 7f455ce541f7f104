"""The main command's report in MLflow (``run_pipeline.py --tracking_uri``).

One run per command, in the bundles' experiment, named ``study_report_<time>``: the scale and the
studies as parameters, every variant's hold-out Dice (mean over seeds and cases) as a metric
``<study>_<variant>_dice``, and as artifacts ``report.md``, ``report.html``, ``figures.json``,
``study.yaml`` and the plots the report shows, under their paths in the output folder, so that
MLflow's artifact view draws the page with its tables and plots. The page's 3D viewers read the
run's NIfTI files, which stay in the output folder: serve that folder to use them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from shared.io import InputError, read_json
from shared.workflow.chaining import EXPERIMENT

REPORT_FILES = ("report.md", "report.html", "figures.json", "study.yaml")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def check_tracking_uri(tracking_uri: str | None) -> None:
    """``None`` (no tracking) or a non-empty MLflow tracking URI (``sqlite:///mlruns.db``, ``http://...``).

    Raises:
        InputError: naming the flag.
    """
    if tracking_uri is not None and (not isinstance(tracking_uri, str) or not tracking_uri.strip()):
        raise InputError(f"--tracking_uri: an MLflow tracking URI (e.g. sqlite:///mlruns.db), got {tracking_uri!r}")


def report_artifacts(output_dir: Path) -> list[Path]:
    """The report's files and the plots ``report.md`` shows (those that exist), inside ``output_dir``."""
    files = [output_dir / name for name in REPORT_FILES]
    report = output_dir / "report.md"
    if report.is_file():
        files += [output_dir / match for match in _IMAGE.findall(report.read_text())]
    root = output_dir.resolve()
    return [path for path in files if path.is_file() and path.resolve().is_relative_to(root)]


def log_report(output_dir: Path, tracking_uri: str, scale: str, studies: Sequence[str]) -> str:
    """Log the report to MLflow (see the module docstring); returns the run's id."""
    import mlflow

    from shared.tracking import run_name

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    run = client.create_run(experiment_id, run_name=run_name("study_report"), tags={"stage": "report"})
    run_id = run.info.run_id
    try:
        client.log_param(run_id, "scale", scale)
        client.log_param(run_id, "studies", ",".join(studies) or "none")
        client.log_param(run_id, "output_dir", str(output_dir))
        figures_file = output_dir / "figures.json"
        figures = read_json(figures_file) if figures_file.is_file() else {}
        for study in studies:
            for variant, values in figures.get(study, {}).get("segmentation", {}).items():
                client.log_metric(run_id, f"{study}_{variant}_dice", float(values["dice"]))
        for path in report_artifacts(output_dir):
            folder = path.parent.relative_to(output_dir).as_posix()
            client.log_artifact(run_id, str(path), artifact_path=None if folder == "." else folder)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
