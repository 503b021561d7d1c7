"""Weight-only quantization of a cached ONNX text export (ONNX Runtime's MatMulNBits / GatherBlockQuantized) and
the dynamic int8 kept under its own name. Each runs in an isolated process (``ctx.run_isolated``) and is a cache
entry keyed by the source export and every setting, built in a temporary folder and renamed into place.

A tied embedding (SmolLM2, Llama-style small models) reaches the exported graph as one initializer read twice: by
the input ``Gather`` and, through a ``Transpose`` node, by the output projection's ``MatMul``. MatMulNBits only
quantizes a ``MatMul`` whose weight is an initializer, so the output projection is given its own (transposed)
initializer first; then it and the embedding ``Gather`` are quantized at ``embedding_bits``.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backends.contract import LoadContext


@dataclass(frozen=True)
class WeightOnlySettings:
    """What a weight-only quantization is keyed by (and what the panel's notes say)."""

    bits: int = 8  # 8 or 4: the MatMuls of every layer
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4  # 4: int8 compute (AVX512-VNNI); 0: unset (fp32 compute)
    embedding_bits: int = 8  # the tied embedding and output projection: 8, 4, or 0 = left in fp32

    def describe(self) -> str:
        embedding = {8: "output projection 8-bit, embedding lookup fp32 (GatherBlockQuantized is 4-bit only)",
                     4: "embedding and output projection 4-bit", 0: "embedding and output projection fp32"}[
            self.embedding_bits]
        return (f"weight-only {self.bits}-bit MatMulNBits, block {self.block_size}, "
                f"{'symmetric' if self.symmetric else 'asymmetric'}, accuracy_level {self.accuracy_level}; "
                f"{embedding}")


REPORT = "quantization.json"  # what the isolated process quantized, read back into the cache manifest


def _report(target: Path, facts: dict[str, Any]) -> dict[str, Any]:
    import json

    (target / REPORT).write_text(json.dumps(facts, indent=2))
    return facts


def _read_report(target: Path) -> dict[str, Any]:
    import json

    path = target / REPORT
    return json.loads(path.read_text()) if path.is_file() else {}


def _copy_side_files(source: Path, target: Path) -> None:
    for item in source.iterdir():
        if item.is_file() and item.suffix not in (".onnx", ".onnx_data") and not item.name.endswith(".onnx.data") \
                and item.name not in ("manifest.json", ".last-used", REPORT):
            shutil.copy2(item, target / item.name)


def untie_output_projection(model: Any) -> list[str]:
    """Give every ``MatMul`` that reads a ``Transpose`` of an initializer its own transposed initializer (the
    tied output projection), so MatMulNBits can quantize it. Returns the names of the MatMuls changed."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    transposes = {n.output[0]: n for n in graph.node if n.op_type == "Transpose" and n.input[0] in inits}
    changed, dropped = [], set()
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in transposes:
            continue
        transpose = transposes[node.input[1]]
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        weight = numpy_helper.to_array(inits[transpose.input[0]])
        if weight.ndim != 2 or perm not in (None, [1, 0]):
            continue
        name = f"{node.name.strip('/').replace('/', '.')}.weight_untied"
        graph.initializer.append(numpy_helper.from_array(weight.T.copy(), name))
        node.input[1] = name
        changed.append(node.name)
        dropped.add(transpose.output[0])
    still_used = {i for n in graph.node for i in n.input}
    keep = [n for n in graph.node if not (n.op_type == "Transpose" and n.output[0] in dropped
                                          and n.output[0] not in still_used)]
    del graph.node[:]
    graph.node.extend(keep)
    onnx.checker.check_model(model) if model.ByteSize() < 2**31 - 1 else None
    return changed


def output_projections(model: Any) -> list[str]:
    """The MatMuls of the output projection (module ``lm_head``) that read an initializer: by the dynamo
    exporter's module scopes, or by node name (optimum's ``/lm_head/MatMul``)."""
    from backends.conversion.onnx_layers import SCOPE_PREFIX_KEY, node_module

    prefix = {p.key: p.value for p in model.metadata_props}.get(SCOPE_PREFIX_KEY, "")
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
            and n.input[1] in inits and node_module(n, prefix).split(".")[-1] == "lm_head"]


def weight_only_quantize(fp32_dir: str, output_dir: str, settings: dict[str, Any]) -> dict[str, Any]:
    """MatMulNBits (and GatherBlockQuantized for the embedding) for the CPU provider; runs in an isolated
    process. Returns what was quantized."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    s = WeightOnlySettings(**settings)
    source, target = Path(fp32_dir), Path(output_dir)
    _copy_side_files(source, target)
    model = onnx.load(str(source / "model.onnx"))
    # A tied projection reads a Transpose of the embedding (optimum): untied first; the dynamo exporter folds that
    # transpose into an initializer of its own. Either way the projection is quantized at embedding_bits (or not).
    untied = untie_output_projection(model) if s.embedding_bits else []
    projections = list(dict.fromkeys([*untied, *output_projections(model)]))
    level = s.accuracy_level or None

    def run(model: Any, bits: int, *, include: list[str] | None = None, exclude: list[str] | None = None,
            ops: tuple[str, ...] = ("MatMul",)) -> Any:
        config = DefaultWeightOnlyQuantConfig(block_size=s.block_size, is_symmetric=s.symmetric,
                                              accuracy_level=level, bits=bits, op_types_to_quantize=ops,
                                              quant_axes=(("MatMul", 0), ("Gather", 1)))
        quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=exclude or [],
                                         nodes_to_include=include)
        quantizer.process()
        return quantizer.model.model

    # ONNX Runtime's GatherBlockQuantized takes 4-bit weights only here: an 8-bit run keeps the embedding lookup
    # in fp32 (one row per token: memory, not speed) and quantizes the output projection.
    embedding_nodes = [n.name for n in model.graph.node if n.op_type == "Gather" and s.embedding_bits == 4
                       and any(i.name == n.input[0] for i in model.graph.initializer)]
    model = run(model, s.bits, exclude=projections)
    if s.embedding_bits and (projections or embedding_nodes):  # (embedding_bits 0: the projection stays fp32)
        model = run(model, s.embedding_bits, include=projections + embedding_nodes, ops=("MatMul", "Gather"))
    large = model.ByteSize() > 2**31 - 1 if hasattr(model, "ByteSize") else False
    onnx.save_model(model, str(target / "model.onnx"), save_as_external_data=large,
                    all_tensors_to_one_file=True, location="model.onnx_data")
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return _report(target, {"settings": asdict(s), "output_projection": projections if s.embedding_bits else [],
                            "output_projection_fp32": [] if s.embedding_bits else projections,
                            "embedding": embedding_nodes,
            "MatMulNBits": counts.get("MatMulNBits", 0), "GatherBlockQuantized": counts.get("GatherBlockQuantized", 0),
            "MatMul left": counts.get("MatMul", 0)})


def needs_reduced_range() -> bool:
    """True on an x86 CPU without VNNI (AVX2 only: many AMD EPYC and cloud VMs). There ONNX Runtime's u8 x s8
    integer kernels add pairs of products in 16 bits (vpmaddubsw), which saturates with full-range 8-bit weights:
    measured here on an AVX2-only EPYC, SmolLM2's dynamic int8 export answered gibberish (top-1 0%, KL 14.7).
    Weights in 7 bits (``reduce_range``), as ONNX Runtime's documentation advises for non-VNNI machines, fit."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: no way to tell here; full range, as before
    return not any(flag in flags for flag in (" avx512_vnni", " avx_vnni", " amx_int8"))


def dynamic_int8_quantize(fp32_dir: str, output_dir: str, reduce_range: bool = False) -> dict[str, Any]:
    """Dynamic int8 (weights int8, activations quantized at run time) with what ONNX Runtime's documentation
    recommends for transformers: per-channel weights, and the output projection left in fp32 (its quantization
    error lands straight on the logits); 7-bit weights on CPUs without VNNI (`needs_reduced_range`)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = Path(fp32_dir), Path(output_dir)
    _copy_side_files(source, target)
    model = onnx.load(str(source / "model.onnx"), load_external_data=False)
    excluded = output_projections(model) + [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                                            and "lm_head" in n.name]
    large = any(p.suffix == ".onnx_data" or p.name.endswith(".onnx.data") for p in source.iterdir())
    quantize_dynamic(source / "model.onnx", target / "model.onnx", weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=reduce_range, nodes_to_exclude=excluded, op_types_to_quantize=["MatMul", "Gemm"],
                     use_external_data_format=large)
    return _report(target, {"per_channel": True, "reduce_range": reduce_range, "excluded": excluded})


def quantization_versions() -> dict[str, str | None]:
    from backends.conversion.onnx_export import export_versions

    versions = export_versions()
    import importlib.metadata

    try:
        versions["onnx-ir"] = importlib.metadata.version("onnx-ir")
    except importlib.metadata.PackageNotFoundError:
        versions["onnx-ir"] = None
    return versions


def cached_weight_only(onnx_dir: Path, settings: WeightOnlySettings, ctx: LoadContext) -> tuple[Path, bool]:
    """The weight-only quantization of a cached (or user's) fp32 export, built once per source and settings."""
    fields = {"source": str(onnx_dir.name if onnx_dir.parent.name == "onnx" else onnx_dir), **asdict(settings),
              "versions": quantization_versions()}
    with ctx.stage("export", f"ONNX Runtime: weight-only {settings.bits}-bit quantization (once, then cached)"):
        return ctx.cache.get_or_build(
            f"onnx-int{settings.bits}", fields,
            lambda tmp: ctx.run_isolated(f"{__name__}:weight_only_quantize", str(onnx_dir), str(tmp),
                                         asdict(settings), description=f"int{settings.bits} weight-only quantization")
            or {"source": str(onnx_dir), "quantized": _read_report(tmp)})


def cached_dynamic_int8(onnx_dir: Path, ctx: LoadContext) -> tuple[Path, bool]:
    """Dynamic int8 of a cached fp32 export (per-channel, output projection excluded), built once, then cached."""
    reduce_range = needs_reduced_range()
    fields = {"source": str(onnx_dir.name if onnx_dir.parent.name == "onnx" else onnx_dir), "per_channel": True,
              "exclude": "lm_head", "reduce_range": reduce_range, "versions": quantization_versions()}
    if reduce_range:
        ctx.notes.append("7-bit weights (reduce_range): this CPU has no VNNI, and full-range int8 weights saturate "
                         "ONNX Runtime's AVX2 integer kernels")
    with ctx.stage("export", "ONNX Runtime: dynamic int8 quantization (once, then cached)"):
        return ctx.cache.get_or_build(
            "onnx-int8-dynamic", fields,
            lambda tmp: ctx.run_isolated(f"{__name__}:dynamic_int8_quantize", str(onnx_dir), str(tmp), reduce_range,
                                         description="dynamic int8 quantization")
            or {"source": str(onnx_dir), "quantized": _read_report(tmp)})
