#!/usr/bin/env bash
# Create the project's virtual environment in .venv and install requirements.txt into it.
# Safe to run again: it reinstalls only when requirements.txt or pyproject.toml changed.
# Use PYTHON=/path/to/python3.11 to choose the interpreter (3.10+; verified on 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "error: $("$python" --version 2>&1) is too old; set PYTHON to a Python 3.10+ interpreter" >&2
  exit 1
fi
# Reuse .venv only if it is whole and made by the same Python (a half-created venv, or one from
# another interpreter, is recreated).
want_version=$("$python" -c 'import sys; print(*sys.version_info[:2], sep=".")')
have_version=$(.venv/bin/python -c 'import sys; print(*sys.version_info[:2], sep=".")' 2>/dev/null || true)
if [ "$have_version" != "$want_version" ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  [ -e .venv ] && echo "Recreating .venv (incomplete, or not made by Python $want_version) ..." >&2
  rm -rf .venv
  "$python" -m venv .venv
fi

stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "Installing requirements into .venv (first time: a few minutes, ~6 GB with torch) ..." >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  echo "$wanted" > "$stamp"
fi

# MONAI Label, on its own import path (.venv/monailabel; see scripts/requirements-monailabel.txt for why
# --no-deps): only the test that serves the exported segmenter puts it on PYTHONPATH.
label_stamp=.venv/monailabel/.requirements.sha256
label_wanted=$(sha256sum scripts/requirements-monailabel.txt | cut -d' ' -f1)
if [ "$(cat "$label_stamp" 2>/dev/null)" != "$label_wanted" ]; then
  echo "Installing MONAI Label into .venv/monailabel ..." >&2
  rm -rf .venv/monailabel
  .venv/bin/python -m pip install --quiet --no-deps --target .venv/monailabel -r scripts/requirements-monailabel.txt
  echo "$label_wanted" > "$label_stamp"
fi

# NiiVue for report.html's 3D viewers: the pinned npm packages of scripts/report_viewer, bundled into one
# classic script (.venv/report_viewer/niivue.js) that the report stage copies beside each report. Needs
# Node.js and npm (the registry only at setup); without them the report's viewers say what is missing.
viewer_stamp=.venv/report_viewer/.package.sha256
viewer_wanted=$(cat scripts/report_viewer/package.json scripts/report_viewer/package-lock.json scripts/report_viewer/entry.js | sha256sum | cut -d' ' -f1)
if [ "$(cat "$viewer_stamp" 2>/dev/null)" != "$viewer_wanted" ] || [ ! -f .venv/report_viewer/niivue.js ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "Building NiiVue for report.html into .venv/report_viewer ..." >&2
    rm -rf .venv/report_viewer
    mkdir -p .venv/report_viewer
    cp scripts/report_viewer/package.json scripts/report_viewer/package-lock.json scripts/report_viewer/entry.js .venv/report_viewer/
    (cd .venv/report_viewer && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
    echo "$viewer_wanted" > "$viewer_stamp"
  else
    echo "warning: npm not found; report.html is written without its 3D viewers (install Node.js and npm, then rerun this script)" >&2
  fi
fi
