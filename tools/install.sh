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

# Headless Chromium (Debian package) for the HTML report's browser test, tests/tools/test_report_browser.py.
# Never fails the install: without apt-get or root, it warns, and that test then fails saying why
# (MDQE_SKIP_BROWSER_TESTS=1 skips it on purpose).
ensure_chromium() {
  local found sudo=""
  found="$(command -v chromium || command -v chromium-browser || true)"
  if [ -n "$found" ]; then
    echo "install.sh: chromium present ($found)"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      echo "install.sh: WARNING: chromium is missing and this is not root: install the 'chromium' package" \
        "for the report's browser test (or set MDQE_SKIP_BROWSER_TESTS=1)"
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: WARNING: chromium is missing and there is no apt-get: install Chromium for the" \
      "report's browser test (or set MDQE_SKIP_BROWSER_TESTS=1)"
    return 0
  fi
  echo "install.sh: installing chromium with apt-get (for the report's browser test)"
  if $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    echo "install.sh: chromium installed ($(command -v chromium))"
  else
    echo "install.sh: WARNING: apt-get could not install chromium; the report's browser test will fail"
  fi
}
ensure_chromium
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
