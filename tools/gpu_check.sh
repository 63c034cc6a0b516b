#!/usr/bin/env bash
# GPU check of MDQE: build the CUDA op, run the GPU tests, time the deformable-attention op, inference and
# training with each backend (cuda, triton, pytorch), and write one Markdown table (tools/gpu_check.py and
# mdqe/benchmark/gpu_check/ have the details).
#   tools/gpu_check.sh --prepare            here, with pip's index: fill .gpu_bundle/ (git-ignored)
#   tools/gpu_check.sh OUTPUT_DIR           on the GPU machine, offline: OUTPUT_DIR/gpu_check.md
#   tools/gpu_check.sh --dry-run OUTPUT_DIR on CPU, tiny sizes, no build
# Runs with $PYTHON, else this checkout's environment ($MDQE_VENV or .venv) if there is one, else python3
# (on a bare GPU machine: its own torch). --prepare needs torch too (pip reads detectron2's sdist with it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-${MDQE_VENV:-.venv}/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" tools/gpu_check.py "$@"
