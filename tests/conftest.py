"""Shared test helpers."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
