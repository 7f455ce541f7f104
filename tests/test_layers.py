"""The package's layers hold: import-linter's contract in pyproject.toml, the same rule the bundle export applies.

``lint-imports`` builds the import graph of ``shared`` (function-level imports included) and checks
the layers contract: benchmarks > workflow > export, cli > evaluation, segmentation, demo > the
run-time modules. The contract is exhaustive, so a new module must be placed in a layer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from shared.export.runtime_code import PROJECT_SUBPACKAGES

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(root: Path = ROOT) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` (its ``shared`` first on the import path)."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300, env=env)


def test_the_layers_contract_holds():
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_every_project_layer_is_project_code_for_the_bundle_export():
    """The contract's project layers are exactly what bundle export refuses to vendor."""
    text = (ROOT / "pyproject.toml").read_text()
    layers = text[text.index("layers = [") : text.index("]", text.index("layers = ["))]
    rows = [row.strip().strip('",') for row in layers.splitlines()[1:] if row.strip()]
    project = {name.strip() for row in rows[:-1] for name in row.replace(":", "|").split("|")}
    assert project == set(PROJECT_SUBPACKAGES)


def test_an_import_running_back_up_breaks_the_contract(tmp_path):
    """A function-level import from segmentation up to workflow is caught (the check is not vacuous)."""
    shutil.copytree(ROOT / "shared", tmp_path / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / "shared" / "segmentation" / "nnunet_training.py"
    target.write_text(
        target.read_text() + "\n\ndef _probe():\n    from shared.workflow.settings import SCALES  # noqa: F401\n"
    )
    result = _lint_imports(tmp_path)
    assert result.returncode != 0 and "shared.segmentation.nnunet_training -> shared.workflow.settings" in result.stdout
