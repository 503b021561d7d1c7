"""Edits of an optimum ONNX export (model.onnx) used by tests/test_check.py: a deliberate change to the model's
math that still writes fluent text, and a fair 8-bit weight-only quantization of the same graph."""

from __future__ import annotations

import numpy as np


def scale_one_mlp(model, layer: int = 15, factor: float = 0.7) -> str:
    """One decoder layer's MLP output projection loaded with the wrong scale (x ``factor``): the kind of mistake a
    converter makes with a per-layer scale; the model still writes fluent English. Returns the weight's name."""
    from onnx import numpy_helper

    node = next((n for n in model.graph.node if n.op_type == "MatMul" and f"layers.{layer}/mlp/down_proj" in n.name),
                None)
    if node is None:
        raise LookupError(f"no MatMul of layers.{layer}/mlp/down_proj in the graph")
    init = next(i for i in model.graph.initializer if i.name == node.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    return init.name


def weight_only_int8(model, min_elements: int = 4096) -> int:
    """Weight-only int8 in QDQ form: every 2-D fp32 weight a MatMul reads becomes int8 with one symmetric scale
    per output column, dequantized (DequantizeLinear, axis 1) in front of that MatMul. Activations stay fp32: a
    fair 8-bit weight-only export (what MatMulNBits with 8 bits computes), made without onnx_ir, which
    onnxruntime's MatMulNBitsQuantizer needs. Returns the number of weights quantized."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    readers = set()
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in inits:
            readers.add(node.input[1])
    done = 0
    new_nodes = []
    for name in sorted(readers):
        array = numpy_helper.to_array(inits[name])
        if array.ndim != 2 or array.dtype != np.float32 or array.size < min_elements:
            continue
        scale = np.maximum(np.abs(array).max(axis=0), 1e-12) / 127.0
        quantized = np.clip(np.round(array / scale), -127, 127).astype(np.int8)
        model.graph.initializer.remove(inits[name])
        model.graph.initializer.extend([numpy_helper.from_array(quantized, name + "_int8"),
                                        numpy_helper.from_array(scale.astype(np.float32), name + "_scale"),
                                        numpy_helper.from_array(np.zeros_like(quantized[0]), name + "_zero")])
        new_nodes.append(helper.make_node("DequantizeLinear", [name + "_int8", name + "_scale", name + "_zero"],
                                          [name], axis=1, name=name + "_dequantize"))
        done += 1
    for node in reversed(new_nodes):  # weights first: the graph stays topologically sorted
        model.graph.node.insert(0, node)
    return done
