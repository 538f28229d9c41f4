#!/usr/bin/env bash
# One-shot set-up: a virtual environment in .venv with the CPU build of torch, wpauc
# (editable) and its test/embedding extras. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
# Re-running `venv` over an environment made by another python3 (pyenv vs the system one)
# rewrites its interpreter and breaks the installed packages, so an existing one is kept.
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -r .ci/requirements.txt
python -m pip install -q -e ".[dev]"
python -m ipykernel install --user --name python3 >/dev/null 2>&1 || true
echo "wpauc is installed in .venv (activate with: . .venv/bin/activate)"
