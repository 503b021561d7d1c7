"""ONNX Runtime's options (the UI, the API, the CLI and links are built from them) and the names they use."""

from __future__ import annotations

from dataclasses import dataclass

from backends.contract import BackendOptions, option
from backends.onnxruntime.providers import GPU_PROVIDERS, PROVIDERS

GRAPH_OPTIMIZATION = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
                      "disabled": "ORT_DISABLE_ALL"}
WEIGHT_ONLY_BITS = {"int8": 8, "int4": 4}
QUANTIZED = (*WEIGHT_ONLY_BITS, "int8-dynamic")
WEIGHT_ONLY_USE = {"precision": tuple(WEIGHT_ONLY_BITS)}  # the weight-only quantizer's settings
IMAGE_QUANTIZATION_REFUSAL = (
    "ONNX Runtime {precision} is for text models only: a diffusion UNet is mostly convolutions, which "
    "weight-only MatMulNBits leaves in fp32 (only its attention projections would shrink), and dynamic int8 of "
    "its convolutions and VAE is not checked here, so pick fp32 for images.")


@dataclass(frozen=True)
class OnnxRuntimeOptions(BackendOptions):
    exporter: str = option("dynamo", choices=("dynamo", "genai-builder"), choice_tasks={"genai-builder": ("text",)},
                           task_reason="The ONNX Runtime GenAI model builder exports language models only: pick the "
                                       "torch.onnx (dynamo) exporter for images.",
                           label="Exporter",
                           help="Who writes the ONNX graph: torch.onnx's dynamo exporter (the model's own "
                                "operations, KV cache as past_key_values/present) or ONNX Runtime GenAI's model "
                                "builder (fused attention and norms; fp32 language models), both run by ONNX "
                                "Runtime with the same loop. Ignored for an existing export.")
    provider: str = option("auto", choices=("auto", *PROVIDERS), gpu_only_values=GPU_PROVIDERS,
                           help="The execution provider (auto: CUDA if it starts, else CPU).")
    precision: str = option("fp32", choices=("fp32", "fp16", "int8", "int4", "int8-dynamic"),
                            gpu_only_values=("fp16",), choice_tasks={q: ("text",) for q in QUANTIZED},
                            task_reason=IMAGE_QUANTIZATION_REFUSAL,
                            help="fp16 exports on CUDA. CPU provider: int8 / int4 are weight-only (MatMulNBits: "
                                 "weights in 8 or 4 bits per block, activations fp32); int8-dynamic quantizes "
                                 "activations at run time too (per-channel, output projection kept fp32).")
    block_size: str = option("32", choices=("32", "64", "128"), tasks=("text",), used_with=WEIGHT_ONLY_USE,
                             label="Quantization block size",
                             help="int8/int4: weights sharing one scale (smaller: more accurate, a little larger).")
    symmetric: bool = option(True, kind="bool", tasks=("text",), used_with=WEIGHT_ONLY_USE,
                             label="Symmetric quantization",
                             help="int8/int4: scales only (symmetric) or scales and zero points.")
    accuracy_level: str = option("4", choices=("0", "1", "2", "3", "4"), tasks=("text",),
                                 used_with=WEIGHT_ONLY_USE,
                                 label="MatMulNBits accuracy level",
                                 help="int8/int4: the compute type (4: int8 dot products on AVX512-VNNI, fastest; "
                                      "0: unset, fp32 compute; 1-3: fp32/fp16/bf16).")
    embedding_bits: str = option("8", choices=("8", "4", "fp32"), tasks=("text",), used_with=WEIGHT_ONLY_USE,
                                 label="Embedding / output projection",
                                 help="int8/int4: the tied embedding and output projection (a third of a small "
                                      "model's weights). 8: output projection 8-bit (the lookup stays fp32: "
                                      "ONNX Runtime's GatherBlockQuantized is 4-bit only); 4: both 4-bit.")
    graph_optimization: str = option("all", choices=("all", "extended", "basic", "disabled"),
                                     label="Graph optimization level",
                                     help="ONNX Runtime's graph_optimization_level (all = ORT_ENABLE_ALL, its "
                                          "default, with layout optimizations).")
    threads: str = option("auto", choices=("auto", "1", "2", "4"), label="Session threads",
                          help="intra_op_num_threads (auto: this machine's CPU budget).")
    onnx_dir: str | None = option(None, kind="path", label="Existing ONNX export (optional)",
                                  help="Check your own export against PyTorch instead of exporting.",
                                  placeholder={"text": "/path/to/optimum-cli/export",
                                               "image": "/path/to/optimum-cli/text-to-image/export"})

