"""What precision a GenAI model folder's graph really runs at (a user's folder says nothing else about it)."""

from __future__ import annotations

import collections
import json
from pathlib import Path


def decoder_path(folder: Path) -> Path:
    """The decoder graph a genai_config.json names."""
    config = json.loads((folder / "genai_config.json").read_text())
    return folder / config["model"]["decoder"]["filename"]


def graph_precision(model_path: Path) -> tuple[str, str]:
    """("int4" | "int8" | "fp16" | "bf16" | "fp32", how it was told), read from the operators and the weights' types
    (not their data): MatMulNBits' ``bits`` first, then the type most floating-point weights have."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    bits = [a.i for node in graph.node if node.op_type == "MatMulNBits" for a in node.attribute if a.name == "bits"]
    if bits:
        return f"int{min(bits)}", f"weight-only MatMulNBits, {min(bits)} bits, {len(bits)} matrices"
    kinds = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
    floats = collections.Counter(kinds[i.data_type] for i in graph.initializer if i.data_type in kinds)
    name = floats.most_common(1)[0][0] if floats else "fp32"
    return name, "no quantized operators"  # after the name: "fp32 (no quantized operators)"
