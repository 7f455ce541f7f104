#!/usr/bin/env bash
# What the browser test of report.html needs (tests/test_report_html.py): Debian's Chromium, driven by
# Playwright (requirements.txt) at /usr/bin/chromium; no browser is downloaded. Installs the `chromium`
# package with apt-get when it is missing (as root, or through sudo). Safe to run again.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: chromium is missing and this system has no apt-get; install Chromium so that 'chromium' is on PATH" >&2
  exit 1
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "error: installing chromium needs root (or sudo)" >&2; exit 1; }
  as_root=(sudo)
fi
echo "Installing Debian's chromium for the report.html browser test ..." >&2
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version >&2
