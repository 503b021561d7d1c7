"""Run the TensorRT builder (backends/conversion/tensorrt_build.py) and runner (backends/tensorrt_backend.py) code
against the real TensorRT Python bindings, without a GPU.

Started by tests/test_tensorrt_bindings.py in a fresh interpreter whose ``PYTHONPATH`` holds one version's real
``tensorrt_bindings`` package (the ``tensorrt-cu13-bindings`` wheel from PyPI) and whose ``LD_LIBRARY_PATH``
holds stand-ins for ``libnvinfer``/``libnvonnxparser``/``libnvinfer_plugin`` (the bindings' only C entry points;
every one returns NULL). So the module, its enums, ``Dims`` and ``Logger`` are TensorRT's own, but nothing can
build or run an engine. Builder, network, parser, runtime, engine and context objects are replaced by `Strict`
doubles generated from the real classes: an attribute the class does not have raises, a read-only property
cannot be set, and every call is checked against the signatures pybind11 wrote into the real docstrings
(argument count, enum types, str, int). Then the backend's code runs on top of them.

Prints one JSON object: {"version": ..., "checks": [names], "problems": [messages]}.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import traceback
from pathlib import Path

import tensorrt_bindings as trt

sys.modules["tensorrt"] = trt  # what `import tensorrt` gives where the full package is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402  (after the alias: the backend imports tensorrt lazily)

from arena.errors import ArenaError  # noqa: E402
from backends import tensorrt_backend as tb  # noqa: E402
from backends.conversion import tensorrt_build as build  # noqa: E402
from backends.conversion import tensorrt_profiles as profiles_mod  # noqa: E402

PREFIX = "tensorrt_bindings.tensorrt."
BUILDER, PARSER, RUNTIME = trt.Builder, trt.OnnxParser, trt.Runtime  # the real classes (the module's get replaced)


# --- signatures from pybind11 docstrings -------------------------------------------------------------------
def _split_params(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += 1 if char in "[(" else -1 if char in "])" else 0
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def signatures(func, name: str) -> list[list[tuple[str, str, bool]]]:
    """Each overload's parameters after ``self``: (name, type, has_default)."""
    found = []
    for line in (func.__doc__ or "").splitlines():
        match = re.match(rf"^\s*(?:\d+\.\s*)?{re.escape(name)}\((.*)\)\s*->", line)
        if not match:
            continue
        params = []
        for part in _split_params(match.group(1)):
            pname, _, rest = part.partition(":")
            ptype, _, default = rest.partition("=")
            params.append((pname.strip(), ptype.strip(), bool(default.strip())))
        found.append(params[1:] if params and params[0][0] == "self" else params)
    return found


def _type_ok(value, ptype: str) -> bool:
    if ptype.startswith(PREFIX):
        cls = getattr(trt, ptype[len(PREFIX):], None)
        if cls is None:
            return True
        if hasattr(cls, "__members__"):  # a TensorRT enum: only its own members
            return isinstance(value, cls)
        if cls is trt.Dims:
            return isinstance(value, (trt.Dims, tuple, list)) and all(isinstance(d, int) for d in value)
        if isinstance(value, Strict):
            return issubclass(value._cls, cls)
        return isinstance(value, cls)
    if ptype == "str":
        return isinstance(value, str)
    if ptype in ("typing.SupportsInt", "int"):
        return isinstance(value, int) and not hasattr(type(value), "__members__")
    if ptype == "bool":
        return isinstance(value, bool)
    if ptype == "tuple":
        return isinstance(value, tuple)
    return True


def check_call(cls, name: str, func, args: tuple, kwargs: dict) -> None:
    sigs = signatures(func, name)
    if not sigs:
        return  # no signature to check against
    problems = []
    for params in sigs:
        required = [p for p in params if not p[2]]
        if not len(required) <= len(args) + len(kwargs) <= len(params):
            problems.append(f"takes {len(required)}..{len(params)} arguments, got {len(args) + len(kwargs)}")
            continue
        bound = dict(zip([p[0] for p in params], args, strict=False))
        bound.update(kwargs)
        types = {p[0]: p[1] for p in params}
        bad = [f"{k}={v!r} is not {types[k]}" for k, v in bound.items() if k in types and not _type_ok(v, types[k])]
        unknown = [k for k in kwargs if k not in types]
        if not bad and not unknown:
            return
        problems.append("; ".join(bad + [f"unknown keyword {k}" for k in unknown]))
    raise TypeError(f"{cls.__name__}.{name}{args}: {' | '.join(problems)}")


class Strict:
    """A stand-in for an object of the real TensorRT class ``cls``: only its attributes, checked calls."""

    def __init__(self, cls, log: list, **values):
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name):
        cls = self._cls
        if not hasattr(cls, name):
            raise AttributeError(f"TensorRT {trt.__version__}: {cls.__name__} has no attribute {name!r}")
        member = getattr(cls, name)
        if isinstance(member, property):
            if name not in self._values:
                raise AttributeError(f"test double: {cls.__name__}.{name} was not given a value")
            return self._values[name]

        def call(*args, **kwargs):
            check_call(cls, name, member, args, kwargs)
            self._log.append((f"{cls.__name__}.{name}", args))
            result = self._values.get(name)
            return result(*args, **kwargs) if callable(result) else result

        return call

    def __setattr__(self, name, value):
        member = getattr(self._cls, name, None)
        if not isinstance(member, property):
            raise AttributeError(f"TensorRT {trt.__version__}: {self._cls.__name__} has no property {name!r}")
        if member.fset is None:
            raise AttributeError(f"TensorRT {trt.__version__}: {self._cls.__name__}.{name} is read-only")
        if name == "precision" and not isinstance(value, trt.DataType):
            raise TypeError(f"{self._cls.__name__}.precision must be a DataType, got {value!r}")
        self._log.append((f"{self._cls.__name__}.{name}=", (value,)))
        self._values[name] = value


def constructor(cls, log: list, instance: Strict):
    """Replaces a TensorRT class in the module: checks the constructor's arguments, returns the double."""
    def make(*args):
        check_call(cls, "__init__", cls.__init__, args, {})
        log.append((f"{cls.__name__}()", args))
        return instance
    return make


# --- the checks --------------------------------------------------------------------------------------------
def unet_network(log: list) -> Strict:
    layers = [Strict(trt.ILayer, log, type=trt.LayerType.SOFTMAX, name="attn/softmax"),
              Strict(trt.ILayer, log, type=trt.LayerType.CONVOLUTION, name="conv_in")]
    inputs = [Strict(trt.ITensor, log, name="sample", shape=trt.Dims([-1, 4, -1, -1])),
              Strict(trt.ITensor, log, name="timestep", shape=trt.Dims([-1])),
              Strict(trt.ITensor, log, name="encoder_hidden_states", shape=trt.Dims([-1, 77, 1024])),
              Strict(trt.ITensor, log, name="guidance_scale", shape=trt.Dims([]))]  # static: no profile
    return Strict(trt.INetworkDefinition, log, num_layers=len(layers), get_layer=lambda i: layers[i],
                  num_inputs=len(inputs), get_input=lambda i: inputs[i])


def check_precision_plans(problems: list) -> None:
    for precision in ("fp32", "fp16"):
        for part in ("decoder", "text_encoder", "unet", "vae_decoder"):
            for vae_fp32 in (False, True):
                for upcast in (False, True):
                    plan = build.precision_plan(trt.__version__, precision, part, vae_fp32, upcast)
                    for flag in plan.builder_flags:
                        if not hasattr(trt.BuilderFlag, flag):
                            problems.append(f"plan {precision}/{part} uses BuilderFlag.{flag}, which is missing")
                    for layer_type in plan.fp32_layer_types:
                        if not hasattr(trt.LayerType, layer_type):
                            problems.append(f"plan {precision}/{part} pins LayerType.{layer_type}, which is missing")
                    flags = build.network_flags(trt, plan)
                    if not isinstance(flags, int) or flags < 0:
                        problems.append(f"network_flags gave {flags!r}")


def check_builder(problems: list, checks: list) -> None:
    """configure_builder for every UNet plan, then build_engine_file end to end on doubles."""
    sd21 = {"unet": {"in_channels": 4, "cross_attention_dim": 1024},
            "vae": {"latent_channels": 4, "block_out_channels": [128, 256, 512, 512]}}
    profiles = profiles_mod.image_profiles("unet", sd21, 768, 768, 77)
    for upcast in (False, True):
        for precision in ("fp32", "fp16"):
            log: list = []
            config = Strict(trt.IBuilderConfig, log)
            profile = Strict(trt.IOptimizationProfile, log)
            builder = Strict(BUILDER, log, create_builder_config=config, create_optimization_profile=profile)
            network = unet_network(log)
            plan = build.precision_plan(trt.__version__, precision, "unet", upcast_attention=upcast)
            build.configure_builder(trt, builder, network, plan, profiles)
            shaped = [args[0] for name, args in log if name == "IOptimizationProfile.set_shape"]
            if shaped != ["sample", "timestep", "encoder_hidden_states"]:
                problems.append(f"profile shapes set for {shaped}")
            flags = [args[0] for name, args in log if name == "IBuilderConfig.set_flag"]
            pinned = [name for name, _ in log if name == "ILayer.precision="]
            if trt.__version__.startswith("10.") and precision == "fp16":
                expected = [trt.BuilderFlag.FP16] + ([trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS] if upcast else [])
                if flags != expected or len(pinned) != int(upcast):
                    problems.append(f"TensorRT 10 fp16 upcast={upcast}: flags {flags}, pinned {pinned}")
            elif flags or pinned:
                problems.append(f"{precision} upcast={upcast}: unexpected flags {flags} / pinned layers {pinned}")
            checks.append(f"configure_builder unet {precision} upcast_attention={upcast}")

    log = []
    builder = Strict(BUILDER, log, create_builder_config=Strict(trt.IBuilderConfig, log),
                     create_optimization_profile=Strict(trt.IOptimizationProfile, log))
    try:
        build.configure_builder(trt, builder, unet_network(log), build.precision_plan(trt.__version__, "fp32"),
                             {"sample": profiles["sample"]})
        problems.append("a dynamic input without a profile range was not refused")
    except ArenaError as exc:
        if "timestep" not in str(exc) or "encoder_hidden_states" not in str(exc):
            problems.append(f"missing-profile message: {exc}")
    checks.append("configure_builder refuses a dynamic input without a profile")

    network = unet_network(log)
    config = Strict(trt.IBuilderConfig, log)
    builder = Strict(BUILDER, log, create_builder_config=config,
                     create_optimization_profile=Strict(trt.IOptimizationProfile, log),
                     create_network=network, build_serialized_network=b"serialized engine")
    parser = Strict(PARSER, log, parse_from_file=True, num_errors=0)
    trt.Builder = constructor(BUILDER, log, builder)
    trt.OnnxParser = constructor(PARSER, log, parser)
    plan = build.precision_plan(trt.__version__, "fp16", "unet", upcast_attention=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "engine.trt"
        build.build_engine_file(str(Path(tmp) / "model.onnx"), str(out), build.asdict(plan),
                             {k: [list(s) for s in v] for k, v in profiles.items()})
        if out.read_bytes() != b"serialized engine":
            problems.append("build_engine_file did not write the serialized network")
    network_flag_calls = [args for name, args in log if name == "Builder.create_network"]
    if network_flag_calls != [(0,)]:  # 10: weakly typed (FP16 flag); 11: always strongly typed, no flag passed
        problems.append(f"create_network called with {network_flag_calls}")
    strong = build.PrecisionPlan("fp16", "fp16", (), True)  # a strongly typed plan on 10 opts in with the flag
    expected = 1 << 1 if trt.__version__.startswith("10.") else 0
    if build.network_flags(trt, strong) != expected:
        problems.append(f"network_flags for a strongly typed plan: {build.network_flags(trt, strong)}, not {expected}")
    checks.append("build_engine_file (parse, configure, build, write)")

    parser_failed = Strict(PARSER, log, parse_from_file=False, num_errors=1,
                           get_error=lambda i: "In node 3 (Foo): unsupported operator")
    trt.OnnxParser = constructor(PARSER, log, parser_failed)
    try:
        build.build_engine_file("model.onnx", "engine.trt", build.asdict(plan), {})
        problems.append("a parse failure was not reported")
    except ArenaError as exc:
        if "unsupported operator" not in str(exc):
            problems.append(f"parse failure message: {exc}")
    checks.append("build_engine_file reports the ONNX parser's errors")


def decoder_engine(log: list, layers: int = 2, heads: int = 2, dim: int = 8, vocab: int = 32, shape_ok=True):
    """An engine/context pair shaped like a KV-cache decoder export (optimum's input and output names)."""
    kv = [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    present = [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    inputs = ["input_ids", "attention_mask", "position_ids", *kv]
    names = inputs + ["logits", *present]
    shapes = {"input_ids": (-1, -1), "attention_mask": (-1, -1), "position_ids": (-1, -1), "logits": (-1, -1, vocab),
              **{n: (-1, heads, -1, dim) for n in kv + present}}
    dtypes = {n: trt.DataType.INT64 for n in inputs[:3]} | {n: trt.DataType.HALF for n in names[3:]}
    dtypes["logits"] = trt.DataType.FLOAT
    bound: dict[str, tuple] = {}

    def out_shape(name):
        if name in bound:
            return trt.Dims(list(bound[name]))
        batch, seq = bound["input_ids"]
        if name == "logits":
            return trt.Dims([batch, seq, vocab])
        return trt.Dims([batch, heads, bound["past_key_values.0.key"][2] + seq, dim])

    def set_shape(name, shape):
        bound[name] = shape
        return shape_ok

    context = Strict(trt.IExecutionContext, log, set_input_shape=set_shape, get_tensor_shape=out_shape,
                     set_tensor_address=True, execute_async_v3=True)
    profile = {n: [trt.Dims([1, 1]), trt.Dims([1, 64]), trt.Dims([1, 4096])] for n in inputs[:3]}
    profile |= {n: [trt.Dims([1, heads, 0, dim]), trt.Dims([1, heads, 64, dim]), trt.Dims([1, heads, 4095, dim])]
                for n in kv}
    engine = Strict(trt.ICudaEngine, log, num_io_tensors=len(names), get_tensor_name=lambda i: names[i],
                    get_tensor_mode=lambda n: trt.TensorIOMode.INPUT if n in inputs else trt.TensorIOMode.OUTPUT,
                    get_tensor_dtype=lambda n: dtypes[n], get_tensor_shape=lambda n: trt.Dims(list(shapes[n])),
                    get_tensor_profile_shape=lambda n, i: profile[n], create_execution_context=context)
    return engine, inputs


class CpuRunner(tb.TrtRunner):
    device = "cpu"

    def _stream_handle(self) -> int:
        return 0


def check_runner(problems: list, checks: list) -> None:
    log: list = []
    engine, inputs = decoder_engine(log)
    trt.Runtime = constructor(RUNTIME, log, Strict(RUNTIME, log, deserialize_cuda_engine=engine))
    runner = CpuRunner(b"engine bytes", "decoder")
    if runner.input_names != tuple(inputs):
        problems.append(f"runner inputs {runner.input_names}")
    prof = runner.profiles()
    if prof["past_key_values.0.key"] != ((1, 2, 0, 8), (1, 2, 64, 8), (1, 2, 4095, 8)):
        problems.append(f"profiles() read {prof['past_key_values.0.key']}")
    feeds = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "position_ids": torch.arange(3)[None],
             **{n: torch.zeros(1, 2, 0, 8) for n in inputs[3:]}}  # prefill: an empty KV cache
    out = runner(**feeds)
    if tuple(out["logits"].shape) != (1, 3, 32) or out["logits"].dtype != torch.float32:
        problems.append(f"logits {tuple(out['logits'].shape)} {out['logits'].dtype}")
    if tuple(out["present.1.value"].shape) != (1, 2, 3, 8) or out["present.1.value"].dtype != torch.float16:
        problems.append(f"present {tuple(out['present.1.value'].shape)} {out['present.1.value'].dtype}")
    addresses = dict(args for name, args in log if name == "IExecutionContext.set_tensor_address")
    if addresses["past_key_values.0.key"] != runner._empty.data_ptr() or 0 in addresses.values():
        problems.append("an empty KV tensor was not given the placeholder address")
    if [args for name, args in log if name == "IExecutionContext.execute_async_v3"] != [(0,)]:
        problems.append("execute_async_v3 was not called once with the stream handle")
    checks.append("TrtRunner: engine I/O, dtypes, profiles, prefill with an empty KV cache")

    engine, _ = decoder_engine(log, shape_ok=False)
    trt.Runtime = constructor(RUNTIME, log, Strict(RUNTIME, log, deserialize_cuda_engine=engine))
    try:
        CpuRunner(b"engine bytes", "decoder")(**feeds)
        problems.append("a shape outside the profile was not reported")
    except ArenaError as exc:
        if "profile allows" not in str(exc):
            problems.append(f"shape refusal message: {exc}")
    checks.append("TrtRunner refuses a shape the engine's profile does not allow")

    trt.Runtime = constructor(RUNTIME, log, Strict(RUNTIME, log, deserialize_cuda_engine=None))
    try:
        CpuRunner(b"from another version", "unet")
        problems.append("an engine TensorRT cannot load was not reported")
    except ArenaError as exc:
        if "Rebuild it" not in str(exc):
            problems.append(f"deserialize failure message: {exc}")
    checks.append("TrtRunner reports an engine this TensorRT cannot load")


def main() -> int:
    problems: list[str] = []
    checks: list[str] = []
    for check in (check_precision_plans, check_builder, check_runner):
        try:
            if check is check_precision_plans:
                check(problems)
                checks.append("precision plans name real BuilderFlag/LayerType members")
            else:
                check(problems, checks)
        except Exception as exc:  # noqa: BLE001 - every failure is a finding to report
            frames = traceback.extract_tb(exc.__traceback__)
            where = next((f for f in reversed(frames) if "/backends/" in f.filename), frames[-1])
            problems.append(f"{check.__name__}: {type(exc).__name__}: {exc} "
                            f"(at {Path(where.filename).name}:{where.lineno} `{where.line}`)")
    print(json.dumps({"version": trt.__version__, "checks": checks, "problems": problems}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
