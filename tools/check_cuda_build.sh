#!/usr/bin/env bash
# Build check of the CUDA kernel of multi-scale deformable attention, for machines without a GPU:
# compiles mdqe._C with nvcc (FORCE_CUDA=1) into a temporary directory, leaving the in-place CPU build
# alone, then loads the result and checks that it reports CUDA support and holds code for every requested
# architecture.
#   tools/check_cuda_build.sh            (TORCH_CUDA_ARCH_LIST defaults to "8.0;9.0", CUDA_HOME to /usr/local/cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${MDQE_VENV:-.venv}/bin/python"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$CUDA_HOME/bin:$PATH"
export FORCE_CUDA=1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}"
export MAX_JOBS="${MAX_JOBS:-2}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/mdqe-cuda-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "check_cuda_build: $("$CUDA_HOME/bin/nvcc" --version | tail -1), torch CUDA $("$PY" -c 'import torch; print(torch.version.cuda)'), archs $TORCH_CUDA_ARCH_LIST"
start=$(date +%s)
if ! "$PY" setup.py build_ext --build-temp "$tmp/temp" --build-lib "$tmp/lib" > "$tmp/build.log" 2>&1; then
  tail -n 60 "$tmp/build.log"
  echo "check_cuda_build: FAILED after $(( $(date +%s) - start )) s" >&2
  exit 1
fi
so="$(find "$tmp/lib" -name '_C*.so' | head -n 1)"
"$PY" - "$so" <<'PY'
import importlib.machinery
import importlib.util
import sys

import torch  # noqa: F401  (loads libc10 and the CUDA runtime the extension links against)

path = sys.argv[1]
loader = importlib.machinery.ExtensionFileLoader("mdqe._C", path)
module = importlib.util.module_from_spec(importlib.util.spec_from_loader("mdqe._C", loader))
loader.exec_module(module)
if not module.with_cuda():
    sys.exit(f"check_cuda_build: {path} was built without CUDA")
PY
# cuobjdump lists the embedded GPU code; minimal toolkits lack it, but triton's wheel ships one.
cuobjdump="$(command -v cuobjdump || true)"
[ -n "$cuobjdump" ] || cuobjdump="$("$PY" -c 'import os, triton; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))' 2>/dev/null || true)"
if [ -x "$cuobjdump" ]; then
  archs="$("$cuobjdump" --list-elf "$so" | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')"
  for arch in ${TORCH_CUDA_ARCH_LIST//;/ }; do
    want="sm_${arch//./}"
    [[ " $archs" == *" $want "* ]] || { echo "check_cuda_build: no $want code in $so (found: $archs)" >&2; exit 1; }
  done
else
  archs="(not listed: no cuobjdump found)"
fi
echo "check_cuda_build: OK in $(( $(date +%s) - start )) s (CUDA extension with $archs)"
