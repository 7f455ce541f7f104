"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``scripts/<script>`` with this interpreter; returns the completed process (never raises)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def bundle_run(
    folder: Path, configs: list[str], *overrides: str, torchrun: bool = False
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` in ``folder`` (under ``torchrun`` with 2 processes if asked); never raises."""
    config_list = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun else []
    command = [sys.executable, *launcher, "-m", "monai.bundle", "run", "--config_file", config_list, *overrides]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=900, check=False)


def copy_bundle_configs(bundle: str, target: Path) -> Path:
    """Copy ``bundles/<bundle>/configs`` into ``target`` (a scratch bundle folder); returns ``target``."""
    shutil.copytree(ROOT / "bundles" / bundle / "configs", target / "configs")
    return target


def mlflow_client(folder: Path):
    """A client on a bundle folder's tracking store (``eval/mlruns.db``, shared by training and inference)."""
    import mlflow
    from monai.utils import path_to_sqlite_uri

    return mlflow.tracking.MlflowClient(tracking_uri=path_to_sqlite_uri(str(folder / "eval" / "mlruns.db")))


def runs_named(client, prefix: str) -> list:
    """Runs of every experiment whose name starts with ``prefix`` (each launch has its own run)."""
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return [r for r in runs if r.info.run_name.startswith(prefix)]


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write ``array`` with nibabel directly (independent of the code under test)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture
def label_volume() -> np.ndarray:
    """A small label map with WM, cortex, CSF and ventricles."""
    labels = np.zeros((12, 12, 12), dtype=np.int16)
    labels[2:10, 2:10, 2:10] = 2
    labels[4:6, 4:6, 4:6] = 4
    labels[1, 1, 1] = 24
    return labels


def cli_values(flags: list[str]) -> dict:
    """``["--a", "[8,8]", "--b", "x"]`` -> ``{"a": [8, 8], "b": "x"}`` (config values from bundle command lines)."""
    import ast

    values = {}
    for key, raw in zip(flags[::2], flags[1::2]):
        try:
            values[key.removeprefix("--")] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            values[key.removeprefix("--")] = raw
    return values


def missing_bundle_properties(folder: Path, configs: list[str], workflow_type: str, **overrides) -> list[str]:
    """MONAI's ``ConfigWorkflow(...).check_properties()`` for a bundle folder, after ``initialize()``.

    Returns the required properties that are missing and the optional ones with a wrong config ID
    (an empty list when the bundle has all its properties).
    """
    import os

    from monai.bundle import ConfigWorkflow

    before = os.getcwd()
    os.chdir(folder)  # the configs' %configs/... references resolve from the bundle's folder
    try:
        workflow = ConfigWorkflow(
            config_file=[str(folder / c) for c in configs], meta_file=str(folder / "configs" / "metadata.json"),
            workflow_type=workflow_type, bundle_root=str(folder), **overrides,
        )  # fmt: skip
        workflow.initialize()
        return workflow.check_properties()
    finally:
        os.chdir(before)


#: The environment of the bare Python: no PYTHONPATH (a worktree's checkout would make ``shared`` importable).
BARE_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> Path:
    """A Python with this venv's pip packages but not the project (``import shared`` fails)."""
    folder = tmp_path_factory.mktemp("bare_python")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "project_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([str(python), "-c", "import monai, torch; import shared"], capture_output=True, text=True,
                           cwd=folder, env=BARE_ENV)  # fmt: skip
    assert "No module named 'shared'" in probe.stderr, probe.stderr[-2000:]
    return python


def assert_one_line_failure(done: subprocess.CompletedProcess, message: str, code: int = 2) -> None:
    """A failed command or bundle run: exit ``code``, no traceback, last line ``error: ...<message>...``."""
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode == code, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines and lines[-1].startswith("error: ") and message in lines[-1], done.stderr[-3000:]
