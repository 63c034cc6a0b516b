#!/usr/bin/env bash
# Make this checkout ready: a virtual environment in .venv (or $MDQE_VENV) with pinned
# dependencies, detectron2 v0.6, and the mdqe package with its compiled deformable-attention op.
# Safe to re-run: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MDQE_VENV:-.venv}"
PY="$VENV/bin/python"
stamp="$VENV/.mdqe-installed"
want="$(cat requirements.txt setup.py ops/csrc/*/* 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import mdqe._C" 2>/dev/null; then
  echo "install.sh: $VENV is up to date"
  exit 0
fi
start=$(date +%s)
[ -x "$PY" ] || python3 -m venv "$VENV"
"$PY" -m pip install --quiet -r requirements.txt
"$PY" tools/install_detectron2.py
"$PY" -m pip install --quiet --no-build-isolation --no-deps -e .
echo "$want" > "$stamp"
echo "install.sh: ready in $(( $(date +%s) - start )) s; use $PY (or 'source $VENV/bin/activate')"
