"""No dead code: vulture finds nothing unused in shared/, scripts/ and tests/ that no test, config or CLI uses.

What the bundle configs reach by name (``_target_: shared.networks...``, ``$shared.io.read_datalist``)
counts as used; the names only frameworks read are listed with their reason in ``vulture_whitelist.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_vulture_finds_no_unused_code(tmp_path):
    names = set()
    for config in sorted((ROOT / "bundles").rglob("*")):
        if config.suffix in (".yaml", ".json") and config.is_file():
            names |= {m.split(".")[-1] for m in re.findall(r"shared(?:\.[A-Za-z_]\w*)+", config.read_text())}
    assert len(names) > 30  # the configs name dozens of the package's functions and classes
    configs = tmp_path / "config_names.py"
    configs.write_text("".join(f"{name}  # noqa: B018\n" for name in sorted(names)))
    command = [
        sys.executable, "-m", "vulture", "shared", "scripts", "tests", str(configs), "--min-confidence", "60",
        "--exclude", "*/.venv/*",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "", result.stdout
