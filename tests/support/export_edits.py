"""Edits of an ONNX export (model.onnx: the arena's dynamo export, or optimum's layout) used by tests/test_check.py
and scripts/build_sequence_corpus.py:
a deliberate change to the model's math that still writes fluent text, three bugs that start late in the
sequence (positions clamped, positions wrapping, logn attention), a bug of the cached path past a long context
(positions clamped on one-token steps only), two bugs of the KV cache alone (a full pass is
exact, every cached step is not), and two fair conversions (8-bit weight-only, weights rounded through fp16) of the
same graph."""

from __future__ import annotations

import numpy as np


def _modules(model) -> list[tuple[object, str]]:
    """(node, the module path it was made in) for every node: the dynamo exporter's metadata or the node name."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from backends.conversion.onnx_layers import SCOPE_PREFIX_KEY, node_module

    prefix = {p.key: p.value for p in model.metadata_props}.get(SCOPE_PREFIX_KEY, "")
    return [(node, node_module(node, prefix)) for node in model.graph.node]


def _in_module(module: str, target: str) -> bool:
    """``target`` ("layers.2/mlp/down_proj", "model.norm", "lm_head") names ``module`` or ends its path."""
    target = target.strip("/").replace("/", ".")
    return module == target or module.endswith("." + target)


def _matmul_weight(model, target: str) -> str | None:
    inits = {i.name for i in model.graph.initializer}
    return next((n.input[1] for n, module in _modules(model) if n.op_type == "MatMul" and _in_module(module, target)
                 and len(n.input) > 1 and n.input[1] in inits), None)


def rotary_tensors(model) -> tuple[str, str]:
    """The rotary cos and sin every layer reads: the tensors that leave the module ``model.rotary_emb``."""
    nodes = _modules(model)
    inside = {name for node, module in nodes if _in_module(module, "rotary_emb") for name in node.output}
    leaving = []
    for node, module in nodes:
        if not _in_module(module, "rotary_emb"):
            leaving += [name for name in node.input if name in inside and name not in leaving]
    order = [name for node, _ in nodes for name in node.output if name in leaving]
    if len(order) != 2:
        raise LookupError(f"expected the rotary cos and sin to leave model.rotary_emb, found {order}")
    return order[0], order[1]


def scale_one_mlp(model, layer: int = 15, factor: float = 0.7) -> str:
    """One decoder layer's MLP output projection loaded with the wrong scale (x ``factor``): the kind of mistake a
    converter makes with a per-layer scale; the model still writes fluent English. Returns the weight's name."""
    from onnx import numpy_helper

    weight = _matmul_weight(model, f"layers.{layer}/mlp/down_proj")
    if weight is None:
        raise LookupError(f"no MatMul of layers.{layer}/mlp/down_proj in the graph")
    init = next(i for i in model.graph.initializer if i.name == weight)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    return init.name


def damage_weight(model, target: str, factor: float = 1.0, noise: float = 0.0, seed: int = 0) -> str:
    """One weight of the export changed: the initializer named ``target`` ("model.norm.weight"), or the weight of
    the MatMul in the scope ``target`` ("layers.2/mlp/down_proj"); multiplied by ``factor`` plus ``noise`` times
    its standard deviation of Gaussian noise. Returns the initializer's name."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    prefixed = next((name for name in inits if name.endswith("." + target)), None) if "/" not in target else None
    name = target if target in inits else prefixed or _matmul_weight(model, target)
    if name is None:
        raise LookupError(f"no initializer or MatMul weight for {target!r} in the graph")
    array = numpy_helper.to_array(inits[name]).astype(np.float32)
    rng = np.random.default_rng(seed)
    changed = array * np.float32(factor) + np.float32(noise * array.std()) * rng.standard_normal(array.shape,
                                                                                                 np.float32)
    inits[name].CopyFrom(numpy_helper.from_array(changed.astype(array.dtype), name))
    return name


def scale_norm(model, scope: str, factor: float) -> str:
    """The RMSNorm in ``scope`` ("/model/norm") multiplies by its weight x ``factor``: a new initializer that only
    that norm reads (exporters share one initializer among identical norm weights, so the shared one is left
    alone). Returns the new initializer's name."""
    from onnx import numpy_helper

    inits = {i.name for i in model.graph.initializer}
    node = [n for n, module in _modules(model) if n.op_type == "Mul" and _in_module(module, scope)
            and any(name in inits for name in n.input)][-1]
    weight = next(k for k, name in enumerate(node.input) if name in inits)
    hidden = next(numpy_helper.to_array(i).shape[-1] for i in model.graph.initializer if "embed_tokens" in i.name)
    name = f"broken{scope.replace('/', '.')}.weight"
    model.graph.initializer.append(numpy_helper.from_array(np.full(hidden, factor, np.float32), name))
    node.input[:] = [name if i == weight else value for i, value in enumerate(node.input)]
    return name


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


# --- bugs that start late in the sequence (they depend on the position, not on the weights) ----------------------
def _rewire(model, old: str, new: str) -> None:
    """Every node that reads ``old`` reads ``new`` instead."""
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def _insert_after(model, produced: set[str], nodes: list) -> None:
    """Insert ``nodes`` right after the last node producing one of ``produced`` (graph inputs: at the start)."""
    index = max((k + 1 for k, n in enumerate(model.graph.node) if set(n.output) & produced), default=0)
    for offset, node in enumerate(nodes):
        model.graph.node.insert(index + offset, node)


def clamp_positions(model, limit: int = 100) -> None:
    """Positions past ``limit`` all read the rotary angle of position ``limit``: a rotary table built for too few
    positions and clamped (the prompt and a short answer never get there)."""
    from onnx import helper, numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.array(limit, np.int64), "broken_position_limit"))
    _rewire(model, "position_ids", "broken_positions")
    _insert_after(model, set(), [helper.make_node("Min", ["position_ids", "broken_position_limit"],
                                                  ["broken_positions"], name="broken_clamp")])


def clamp_cached_positions(model, limit: int = 600) -> None:
    """On a cached step (one new token) positions past ``limit`` read the rotary angle of position ``limit``; a full
    pass (several tokens) is exact: a decode graph whose rotary table was built for too few positions, a bug of the
    cached path that only a long context reaches."""
    from onnx import helper, numpy_helper

    model.graph.initializer.extend([numpy_helper.from_array(np.array(limit, np.int64), "broken_cached_limit"),
                                    numpy_helper.from_array(np.array(1, np.int64), "broken_one")])
    _rewire(model, "position_ids", "broken_positions")
    _insert_after(model, set(), [
        helper.make_node("Shape", ["input_ids"], ["broken_shape"], name="broken_shape"),
        helper.make_node("Gather", ["broken_shape", "broken_one"], ["broken_length"], name="broken_length", axis=0),
        helper.make_node("Equal", ["broken_length", "broken_one"], ["broken_single"], name="broken_single"),
        helper.make_node("Min", ["position_ids", "broken_cached_limit"], ["broken_clamped"], name="broken_min"),
        helper.make_node("Where", ["broken_single", "broken_clamped", "position_ids"], ["broken_positions"],
                         name="broken_where")])


def wrap_positions(model, window: int = 128) -> None:
    """Positions wrap around every ``window`` (position modulo window): a ring-buffer cache that reuses its slots
    without the positions that go with them."""
    from onnx import helper, numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.array(window, np.int64), "broken_window"))
    _rewire(model, "position_ids", "broken_positions")
    _insert_after(model, set(), [helper.make_node("Mod", ["position_ids", "broken_window"], ["broken_positions"],
                                                  name="broken_wrap")])


def logn_attention(model, trained: int = 128) -> None:
    """Attention logits scaled by log(position)/log(trained) past ``trained`` positions (Qwen's "logn" attention,
    carried into a model trained without it): the rotary cos and sin are multiplied by that factor, so queries
    and keys past it are sharpened; identical up to ``trained``."""
    import math

    from onnx import TensorProto, helper, numpy_helper

    model.graph.initializer.extend([numpy_helper.from_array(np.array(1.0, np.float32), "logn_one"),
                                    numpy_helper.from_array(np.array(math.log(trained), np.float32), "logn_base"),
                                    numpy_helper.from_array(np.array([-1], np.int64), "logn_axis")])
    cos, sin = rotary_tensors(model)
    _rewire(model, cos, "logn_cos")
    _rewire(model, sin, "logn_sin")
    _insert_after(model, {cos, sin}, [
        helper.make_node("Cast", ["position_ids"], ["logn_position"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["logn_position", "logn_one"], ["logn_count"]),
        helper.make_node("Log", ["logn_count"], ["logn_log"]),
        helper.make_node("Div", ["logn_log", "logn_base"], ["logn_ratio"]),
        helper.make_node("Max", ["logn_ratio", "logn_one"], ["logn_factor"]),
        helper.make_node("Unsqueeze", ["logn_factor", "logn_axis"], ["logn_factor_3d"]),
        helper.make_node("Mul", [cos, "logn_factor_3d"], ["logn_cos"]),
        helper.make_node("Mul", [sin, "logn_factor_3d"], ["logn_sin"])])


def fp16_rounded(model, min_elements: int = 1024) -> int:
    """Every large fp32 weight rounded to fp16 values and stored back as fp32: a fair export through fp16 (judged
    at fp32, as its graph says). Returns how many weights were rounded."""
    from onnx import numpy_helper

    done = 0
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size >= min_elements:
            init.CopyFrom(numpy_helper.from_array(array.astype(np.float16).astype(np.float32), init.name))
            done += 1
    return done


# --- bugs of the KV cache alone: the full pass computes the model exactly, the cached steps read a wrong cache -----
def _present_outputs(model, kind: str) -> list[str]:
    return [o.name for o in model.graph.output if o.name.startswith("present.") and o.name.endswith(f".{kind}")]


def scale_cached_values(model, factor: float = 0.9) -> int:
    """Every ``present.*.value`` the graph hands back is multiplied by ``factor``: a cache written in the wrong
    scale or dtype (the logits of the pass that writes it are untouched). Returns how many outputs changed."""
    from onnx import helper, numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "broken_cache_scale"))
    names = _present_outputs(model, "value")
    for name in names:
        raw = f"{name}_unscaled"
        for node in model.graph.node:
            node.output[:] = [raw if out == name else out for out in node.output]
        _rewire(model, name, raw)
        _insert_after(model, {raw}, [helper.make_node("Mul", [raw, "broken_cache_scale"], [name],
                                                      name=f"broken_scale_{name}")])
    return len(names)


def swap_cached_key_value(model, layers: tuple[int, ...] = (29,)) -> int:
    """In ``layers``, the keys are handed back as ``present.*.value`` and the values as ``present.*.key``: an
    output-order slip of a merged or hand-wired decoder (same shapes, so nothing fails; the pass that writes the
    cache still attends over the right tensors). Returns the layers swapped."""
    from onnx import helper

    swapped = 0
    for layer in layers:
        key, value = f"present.{layer}.key", f"present.{layer}.value"
        if key not in {o.name for o in model.graph.output}:
            continue
        for name in (key, value):  # the tensors keep feeding the attention under new names
            for node in model.graph.node:
                node.output[:] = [f"{name}_kept" if out == name else out for out in node.output]
            _rewire(model, name, f"{name}_kept")
        model.graph.node.extend([helper.make_node("Identity", [f"{value}_kept"], [key], name=f"broken_swap_{key}"),
                                 helper.make_node("Identity", [f"{key}_kept"], [value], name=f"broken_swap_{value}")])
        swapped += 1
    return swapped
