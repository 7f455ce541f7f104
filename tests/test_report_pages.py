"""report.html without a browser, and the report in MLflow (``run_pipeline.py --tracking_uri``).

The page in a real browser: ``test_report_html.py``.
"""

from __future__ import annotations

import pytest

from shared.io import InputError, write_json
from shared.workflow.pipeline import run_demo_pipeline
from shared.workflow.report_html import VIEWER_BUNDLE_ENV
from shared.workflow.report_tracking import log_report, report_artifacts


def _report_folder(folder):
    (folder / "plots").mkdir(parents=True)
    (folder / "plots" / "errors.png").write_bytes(b"\x89PNG fake")
    (folder / "report.md").write_text("# Demo run\n\n![errors](plots/errors.png)\n![gone](plots/missing.png)\n")
    (folder / "report.html").write_text("<html></html>")
    write_json(
        folder / "figures.json", {"ventricles": {"segmentation": {"real": {"dice": 0.9}, "augmented": {"dice": 0.8}}}}
    )
    return folder


def test_the_report_its_page_and_its_plots_are_logged_under_their_paths_with_each_variants_dice(tmp_path):
    import mlflow

    out = _report_folder(tmp_path / "run")
    assert [p.relative_to(out).as_posix() for p in report_artifacts(out)] == [
        "report.md", "report.html", "figures.json", "plots/errors.png",
    ]  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_report(out, uri, "demo", ["ventricles"])
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["studies"] == "ventricles"
    assert run.data.metrics == {"ventricles_real_dice": 0.9, "ventricles_augmented_dice": 0.8}
    assert {a.path for a in client.list_artifacts(run_id)} >= {"report.md", "report.html", "figures.json", "plots"}
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/errors.png"]


def test_the_main_command_logs_its_report_html_to_mlflow(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = run_demo_pipeline(output_dir=str(tmp_path / "run"), branches="none", n_brains=2, n_tumours=2,
                               tracking_uri=uri)  # fmt: skip
    html = (report.parent / "report.html").read_text()
    assert "<h1>Demo run</h1>" in html and "<h2>Stage times</h2>" in html and "viewer-data" in html
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("monai_experiment").experiment_id])
    assert "report.html" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_bad_tracking_uri_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="--tracking_uri"):
        run_demo_pipeline(output_dir=str(tmp_path / "run"), branches="none", tracking_uri=" ")
    assert not (tmp_path / "run").exists()


def test_without_the_niivue_bundle_the_page_is_written_and_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(VIEWER_BUNDLE_ENV, str(tmp_path / "absent.js"))
    report = run_demo_pipeline(output_dir=str(tmp_path / "run"), branches="none", n_brains=2, n_tumours=2)
    html = (report.parent / "report.html").read_text()
    assert '<script src="report_assets/niivue.js">' not in html and "NiiVue is missing" in html
    assert not (report.parent / "report_assets").exists()
