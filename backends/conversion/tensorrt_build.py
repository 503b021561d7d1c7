"""TensorRT engine builds: precision plans per TensorRT version (10 and 11), engine cache keys, the builder set-up,
and the cached build of one engine from an ONNX graph in an isolated process (``ctx.run_isolated``).

TensorRT 11 networks are strongly typed and have no FP16 builder flag, so fp16 engines come from an fp16 ONNX
graph; TensorRT 10 builds fp16 from the fp32 graph with ``BuilderFlag.FP16`` (weak typing). Engines are
serialized into the artifact cache atomically, keyed by the ONNX graph's hash, the TensorRT version, the GPU name
and compute capability, the profile shapes and the precision plan. Nothing imports tensorrt at module import.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backends.contract import ArenaError, LoadContext
from backends.conversion.tensorrt_profiles import Profiles

TRT_INSTALL = ("bash scripts/setup.sh --gpu  # requirements-gpu.txt: tensorrt-cu13 10.x (TensorRT 11 also works "
               "here: 'tensorrt-cu13>=11,<12'), onnxruntime-gpu in place of onnxruntime, NVIDIA driver for CUDA 13")
SUPPORTED_MAJORS = (10, 11)
WORKSPACE_BYTES = 8 << 30


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError as exc:
        raise ArenaError(f"Cannot read the TensorRT version {version!r}.") from exc


@dataclass(frozen=True)
class PrecisionPlan:
    """How one engine gets its precision on one TensorRT version."""

    precision: str  # what the user asked for: "fp32" | "fp16"
    onnx_dtype: str  # the ONNX graph the engine is built from: "fp32" | "fp16"
    builder_flags: tuple[str, ...]  # TensorRT 10 weak typing: ("FP16",)
    strongly_typed: bool
    fp32_layer_types: tuple[str, ...] = ()  # TensorRT 10: layers pinned to fp32 (upcast attention: "SOFTMAX")
    note: str = ""  # said in the panel when the plan departs from what was asked


def precision_plan(trt_version: str, precision: str, component: str = "decoder",
                   vae_fp32: bool = False, upcast_attention: bool = False) -> PrecisionPlan:
    """The ONNX graph, builder flags and typing for ``component`` at ``precision`` on this TensorRT version.

    A UNet with ``upcast_attention`` (Stable Diffusion 2.x) must compute its attention softmax in fp32 or fp16
    overflows into NaN/black images: TensorRT 10 pins the softmax layers to fp32 inside the fp16 engine;
    TensorRT 11 takes precision from the graph only, so that UNet is built from the fp32 graph (slower, safe).
    """
    major = trt_major(trt_version)
    if major not in SUPPORTED_MAJORS:
        raise ArenaError(f"TensorRT {trt_version} is not supported: this backend is written for TensorRT "
                         f"{' and '.join(map(str, SUPPORTED_MAJORS))}. Install: `{TRT_INSTALL}`")
    if precision not in ("fp32", "fp16"):
        raise ArenaError(f"TensorRT precision '{precision}' is not offered: choose fp32 or fp16.")
    half = precision == "fp16" and not (component == "vae_decoder" and vae_fp32)
    upcast = half and component == "unet" and upcast_attention
    if major >= 11:  # strongly typed always; precision lives in the graph
        if upcast:
            return PrecisionPlan(precision, "fp32", (), True, note="UNet built in fp32: it needs upcast attention "
                                 "and TensorRT 11 takes precision from the (fp16) graph only")
        return PrecisionPlan(precision, "fp16" if half else "fp32", (), True)
    return PrecisionPlan(precision, "fp32", ("FP16",) if half else (), False,
                         fp32_layer_types=("SOFTMAX",) if upcast else ())


def onnx_digest(onnx_path: str | Path) -> str:
    """Hash of an ONNX graph and its external data files (the key an engine is cached under)."""
    path = Path(onnx_path)
    digest = hashlib.sha256()
    files = [path] + sorted(p for p in path.parent.iterdir()
                            if p != path and p.is_file() and (p.suffix in (".onnx_data", ".data", ".bin", ".pb")
                                                              or p.name.startswith(path.name + "_data")))
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def engine_cache_fields(onnx_hash: str, trt_version: str, gpu_name: str, capability: str, profiles: Profiles,
                        plan: PrecisionPlan) -> dict[str, Any]:
    """Everything an engine depends on: a change in any of them means a different engine file."""
    return {"onnx": onnx_hash, "tensorrt": trt_version, "gpu": gpu_name, "compute_capability": capability,
            "profiles": {name: [list(s) for s in shapes] for name, shapes in sorted(profiles.items())},
            "precision": json.loads(json.dumps(asdict(plan)))}


def network_flags(trt: Any, plan: PrecisionPlan) -> int:
    """Network creation flags: strongly typed where the plan asks for it on TensorRT 10 (opt-in there).

    TensorRT 11 networks are always strongly typed and its ``STRONGLY_TYPED`` flag is deprecated and ignored
    (its value moved from 1 to 0), so nothing is passed there.
    """
    if plan.strongly_typed and trt_major(trt.__version__) < 11:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def configure_builder(trt: Any, builder: Any, network: Any, plan: PrecisionPlan, profiles: Profiles,
                      workspace_bytes: int = WORKSPACE_BYTES) -> Any:
    """A builder config for ``network``: workspace, version-specific precision flags, one profile for the inputs.

    Profiles are set only for the network's actual inputs; an input without a profile range is an error here
    (TensorRT would reject the build with a less helpful message).
    """
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    for flag in plan.builder_flags:  # TensorRT 10 only: 11 has no precision flags at all
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.fp32_layer_types:
        pinned = {getattr(trt.LayerType, name) for name in plan.fp32_layer_types}
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if layer.type in pinned:
                layer.precision = trt.float32
                layer.set_output_type(0, trt.float32)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    profile = builder.create_optimization_profile()
    missing = []
    for tensor in inputs:
        if all(d >= 0 for d in tuple(tensor.shape)):
            continue  # static (optimum's scalar timestep): nothing to range over
        shapes = profiles.get(tensor.name)
        if shapes is None:
            missing.append(tensor.name)
            continue
        profile.set_shape(tensor.name, *shapes)
    if missing:
        raise ArenaError(f"No optimization profile for the dynamic input(s) {', '.join(missing)}.")
    config.add_optimization_profile(profile)
    return config


def build_engine_file(onnx_path: str, engine_path: str, plan: dict[str, Any], profiles: dict[str, Any]) -> dict:
    """Parse an ONNX graph and write a serialized engine (runs in an isolated process: see `run_isolated`)."""
    import tensorrt as trt

    plan_obj = PrecisionPlan(**{k: tuple(v) if isinstance(v, list) else v for k, v in plan.items()})
    shapes = {name: tuple(tuple(s) for s in value) for name, value in profiles.items()}
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, plan_obj))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArenaError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = configure_builder(trt, builder, network, plan_obj, shapes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArenaError(f"TensorRT failed to build an engine from {onnx_path} (see the worker log).")
    Path(engine_path).write_bytes(bytes(serialized))
    return {"tensorrt": trt.__version__}


def cached_engine(ctx: LoadContext, label: str, onnx_path: Path, plan: PrecisionPlan, profiles: Profiles,
                  trt_version: str, gpu_name: str, capability: str) -> Path:
    """The serialized engine file for ``onnx_path`` under ``plan`` and ``profiles``: from the cache, or built once
    in an isolated process (a builder crash is reported, not inherited)."""
    fields = engine_cache_fields(onnx_digest(onnx_path), trt_version, gpu_name, capability, profiles, plan)
    with ctx.stage("engine_build", f"TensorRT: building the {label} engine (once, then cached)"):
        folder, _ = ctx.cache.get_or_build(
            "trt-engine", fields,
            lambda tmp: ctx.run_isolated(f"{__name__}:build_engine_file", str(onnx_path), str(tmp / "engine.trt"),
                                         asdict(plan), {k: [list(s) for s in v] for k, v in profiles.items()},
                                         description=f"TensorRT {label} engine build")
            or {"source": str(onnx_path)})
    return folder / "engine.trt"
