"""ONNX Runtime GenAI's options (the UI, the API, the CLI and links are built from them) and its install line."""

from __future__ import annotations

from dataclasses import dataclass

from backends.contract import BackendOptions, option
from backends.conversion.genai_build import CPU_PRECISIONS, QUANTIZED

# 0.18.0, the release of this stack (transformers 5): from 0.16.0 on, the model builder imports transformers 5's
# Qwen3.5 classes at import time and reads RoPE settings only from transformers 5's ``rope_parameters``, so it
# needs transformers 5 (0.15.2 was the last for transformers 4).
GENAI_VERSION = "0.18.0"
GENAI_INSTALL = f"pip install onnxruntime-genai=={GENAI_VERSION}"
GENAI_CUDA_INSTALL = (f"pip install onnxruntime-genai-cuda=={GENAI_VERSION}  # instead of onnxruntime-genai; needs "
                      "onnxruntime-gpu (requirements-gpu.txt)")

QUANTIZED_USE = {"precision": tuple(QUANTIZED)}  # the builder's quantization settings


@dataclass(frozen=True)
class OnnxRuntimeGenAIOptions(BackendOptions):
    precision: str = option("fp32", choices=CPU_PRECISIONS, tasks=("text",),
                            help="What the model builder makes for the CPU: fp32, or int8 / int4 weight-only "
                                 "(MatMulNBits: weights in 8 or 4 bits per block, activations fp32).")
    block_size: str = option("32", choices=("16", "32", "64", "128", "256"), tasks=("text",), used_with=QUANTIZED_USE,
                             label="Quantization block size",
                             help="int8/int4: weights sharing one scale (the builder's block_size).")
    accuracy_level: str = option("4", choices=("0", "1", "2", "3", "4"), tasks=("text",), used_with=QUANTIZED_USE,
                                 label="MatMulNBits accuracy level",
                                 help="int8/int4: the compute type (4: int8 dot products, the builder's CPU default; "
                                      "1-3: fp32/fp16/bf16; 0: unset).")
    symmetric: bool = option(True, kind="bool", tasks=("text",), used_with=QUANTIZED_USE,
                             label="Symmetric quantization",
                             help="int8/int4: scales only (symmetric) or scales and zero points (is_symmetric).")
    genai_dir: str | None = option(None, kind="path", tasks=("text",), label="Existing GenAI model folder (optional)",
                                   placeholder="/path/to/folder/with/genai_config.json",
                                   help="Run your own model-builder output (genai_config.json + model.onnx) "
                                        "instead of building one from the model.")
