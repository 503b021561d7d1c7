"""The output of each module of an ONNX export, found by the module scopes exporters keep in node names.

torch.onnx's dynamo exporter records each node's module path in its metadata (``pkg.torch.onnx.name_scopes``);
optimum, the TorchScript exporter and the GenAI builder name a node after it: ``/model/layers.10/mlp/down_proj/MatMul``.
So the tensor that leaves the scope ``/model/layers.10`` is the output of the reference model's module
``model.layers.10``: the last tensor, in graph order, made inside the scope and used outside it (or the graph's
``logits``). `unit_tensors` maps module paths to those tensors; `with_outputs` writes a copy of the graph that
also returns them (Polygraphy's way of marking outputs), next to links to the original's external weights, so a
540 MB export is not copied. Names that do not map (another exporter's naming) are simply left out.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

LOGITS = "logits"
SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # the dynamo exporter's module path of each node
SCOPE_PREFIX_KEY = "arena.module_prefix"  # the arena's export wrapper: its attribute, less in every scope


def node_module(node, prefix: str = "") -> str:
    """The module path a node was made in ("model.layers.10.mlp.down_proj"): from the dynamo exporter's metadata
    (``pkg.torch.onnx.name_scopes``, less the exporting wrapper's ``prefix``) where the node has it, else from
    its name's scopes (``/model/layers.10/mlp/down_proj/MatMul``: torch.onnx's TorchScript exporter, optimum,
    the GenAI builder); "" when neither says."""
    import ast

    for prop in node.metadata_props:
        if prop.key == SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            path = next((s for s in reversed(scopes[:-1]) if s), "") if len(scopes) > 1 else ""
            if prefix and (path + ".").startswith(prefix):
                path = path[len(prefix):]
            return path
    if not node.name.startswith("/"):
        return ""
    return ".".join(node.name.strip("/").split("/")[:-1])


def unit_tensors(model, units: list[str]) -> dict[str, str]:
    """{module path: the tensor leaving its scope} for the ``units`` found in ``model`` (an onnx ModelProto)."""
    nodes = list(model.graph.node)
    props = {p.key: p.value for p in model.metadata_props}
    prefix = props.get(SCOPE_PREFIX_KEY, "")
    module_of = [node_module(node, prefix) for node in nodes]
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    outputs = {o.name for o in model.graph.output}
    found: dict[str, str] = {}
    for unit in units:
        inside = [m == unit or m.startswith(unit + ".") for m in module_of]
        last = None
        for index, node in enumerate(nodes):
            if not inside[index]:
                continue
            for name in node.output:
                leaves = any(not inside[user] for user in consumers.get(name, ()))
                if (leaves and name not in outputs) or name == LOGITS:
                    last = name
        if last is not None:
            found[unit] = last
    return found


def with_outputs(model_path: str | Path, tensors: list[str], out_dir: str | Path) -> Path:
    """A copy of the graph at ``model_path`` that also outputs ``tensors``, written to ``out_dir`` (its
    external weight files linked, not copied). Returns the copy's path."""
    import onnx
    from onnx import shape_inference

    model_path, out_dir = Path(model_path), Path(out_dir)
    model = onnx.load(str(model_path), load_external_data=False)
    try:
        inferred = shape_inference.infer_shapes(model)
        types = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    except Exception:  # noqa: BLE001 - no types: the outputs are declared float, which most graphs are
        types = {}
    present = {o.name for o in model.graph.output}
    for name in tensors:
        if name in present:
            continue
        info = onnx.ValueInfoProto(name=name)
        if name in types:
            info.type.CopyFrom(types[name])
        else:
            info.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        model.graph.output.append(info)
    out_dir.mkdir(parents=True, exist_ok=True)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and not re.search(r"(^|/)\.\.(/|$)", entry.value):
                target, link = model_path.parent / entry.value, out_dir / entry.value
                if not link.exists() and target.exists():
                    link.parent.mkdir(parents=True, exist_ok=True)
                    try:  # a hard link: ONNX Runtime refuses external data whose resolved path leaves the folder
                        os.link(target.resolve(), link)
                    except OSError:  # another file system
                        shutil.copyfile(target, link)
    copy = out_dir / model_path.name
    onnx.save(model, str(copy))
    return copy


def prefill_feeds(session, token_ids: list[int]) -> dict:
    """The inputs of one forward pass over ``token_ids`` with an empty cache, for a decoder exported with past
    key values (optimum's text-generation-with-past): ids, mask, positions, zero-length past tensors."""
    import numpy as np

    ids = np.array([token_ids], dtype=np.int64)
    feeds = {}
    for item in session.get_inputs():
        if item.name == "input_ids":
            feeds[item.name] = ids
        elif item.name == "attention_mask":
            feeds[item.name] = np.ones_like(ids)
        elif item.name == "position_ids":
            feeds[item.name] = np.arange(ids.shape[1], dtype=np.int64)[None]
        elif item.name == "use_cache_branch":  # optimum 1.x's merged decoder: the branch without a cache
            feeds[item.name] = np.array([False])
        elif item.name.startswith("past_key_values"):
            dtype = np.float16 if "float16" in item.type else np.float32
            shape = [dim if isinstance(dim, int) else 1 if i == 0 else 0 for i, dim in enumerate(item.shape)]
            feeds[item.name] = np.zeros(shape, dtype)
    return feeds


def layer_outputs(model_path: str | Path, token_ids: list[int], units: list[str], workdir: str | Path,
                  providers: list | None = None) -> dict:
    """{unit: output} of one forward pass of the export at ``model_path`` over ``token_ids`` (prefill), for the
    ``units`` whose scopes its node names keep; the copy of the graph with those outputs goes to ``workdir``."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    found = unit_tensors(onnx.load(str(model_path), load_external_data=False), units)
    if not found:
        return {}
    copy = with_outputs(model_path, sorted(set(found.values())), workdir)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every marked tensor
    session = ort.InferenceSession(str(copy), options, providers=providers or ["CPUExecutionProvider"])
    names = list(dict.fromkeys(found.values()))
    values = dict(zip(names, session.run(names, prefill_feeds(session, token_ids)), strict=True))
    return {unit: np.asarray(values[name], np.float32) for unit, name in found.items()}
