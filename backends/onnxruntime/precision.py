"""What precision an ONNX graph really runs at, read from its operators and weights, and how this backend's
precision names map onto the verdicts' classes."""

from __future__ import annotations

from pathlib import Path

# This backend's precision names that are not one of the core's classes (`backends.contract.PRECISION_CLASSES`), and
# the class each is judged as: dynamic int8 quantizes weights and activations to 8 bits.
TOLERANCE_CLASSES = {"int8-dynamic": "int8"}

QUANTIZED_OPS = ("MatMulNBits", "DynamicQuantizeLinear", "MatMulInteger", "DequantizeLinear", "QuantizeLinear",
                 "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "GatherBlockQuantized")


def graph_precision(model_path: str | Path) -> tuple[str, str]:
    """What precision an ONNX graph really runs at, read from its operators and weights (not its tensor data):
    ("int4" | "int8" | "fp16" | "bf16" | "fp32", how it was told). Quantized operators decide first
    (MatMulNBits' ``bits``, the integer type of the weights a DequantizeLinear reads), then the type most of the
    floating-point weights have."""
    import collections

    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    ops = collections.Counter(node.op_type for node in graph.node)
    for sub in (a.g for node in graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH):
        ops.update(node.op_type for node in sub.node)
    inits = {i.name: i.data_type for i in graph.initializer}
    nbits = [a.i for node in graph.node if node.op_type == "MatMulNBits" for a in node.attribute if a.name == "bits"]
    if ops["MatMulNBits"]:
        bits = min(nbits) if nbits else 4
        return f"int{bits}", f"weight-only (MatMulNBits, {bits} bits, {ops['MatMulNBits']} matrices)"
    dynamic = ops["DynamicQuantizeLinear"] or ops["MatMulInteger"] or ops["DynamicQuantizeMatMul"]
    if dynamic:
        return "int8", (f"dynamic quantization (MatMulInteger {ops['MatMulInteger']}, DynamicQuantizeLinear "
                        f"{ops['DynamicQuantizeLinear']}): weights and activations in 8 bits")
    small = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT8: 8,
             onnx.TensorProto.UINT8: 8}
    dq_bits = [small[inits[node.input[0]]] for node in graph.node
               if node.op_type == "DequantizeLinear" and inits.get(node.input[0]) in small]
    if dq_bits:
        kind = "QDQ" if ops["QuantizeLinear"] else "weight-only"
        return f"int{min(dq_bits)}", f"{kind} (DequantizeLinear, {len(dq_bits)} {min(dq_bits)}-bit weights)"
    if any(op.startswith("QLinear") for op in ops):
        return "int8", "static quantization (QLinear operators)"
    floats = collections.Counter(t for t in inits.values() if t in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                                   onnx.TensorProto.BFLOAT16))
    top = floats.most_common(1)[0][0] if floats else onnx.TensorProto.FLOAT
    name = {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}.get(top, "fp32")
    return name, "weights" if name != "fp32" else "weights, no quantized operators"  # after the name: "fp32 weights, …"

