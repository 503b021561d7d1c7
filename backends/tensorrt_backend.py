"""TensorRT: native engines built from this project's ONNX exports with the TensorRT Python API (10 and 11).

- One engine per graph: the LLM decoder with KV cache (one optimization profile covering prefill and decode up
  to the chosen length), and the text encoder, UNet and VAE decoder of a diffusion pipeline.
- Precision: TensorRT 11 networks are strongly typed and have no FP16 builder flag, so fp16 engines come from an
  fp16 ONNX graph; TensorRT 10 builds fp16 from the fp32 graph with ``BuilderFlag.FP16`` (weak typing). "Keep the
  VAE in fp32" builds the VAE decoder from the fp32 graph without the flag.
- Engines are built in a separate short-lived process (a builder crash is reported, not inherited), serialized
  into the artifact cache atomically and keyed by the ONNX graph's hash, the TensorRT version, the GPU name and
  compute capability, the profile shapes and the precision plan. Engine build time is reported apart from the
  ONNX export.
- Inference uses torch CUDA tensors as the engine's buffers (``set_tensor_address`` + ``execute_async_v3`` on
  torch's current stream); the generation loops are the runtime-agnostic ones in `backends.loops`.
- An existing serialized UNet engine (a ``unet.trt`` built elsewhere) can replace the built one; its profile
  must cover the shapes of the run, which is checked before anything runs.

Nothing here is imported at module import time: the UI process lists the backend without loading TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from arena.errors import ArenaError
from arena.workers import run_isolated
from backends.base import AVAILABLE, Availability, Backend, LoadContext, OptionChoice, torch_threads
from backends.torch_backend import TORCH_CUDA_INSTALL

TRT_INSTALL = ("bash scripts/setup.sh --gpu  # requirements-gpu.txt: tensorrt-cu13 10.x (TensorRT 11 also works "
               "here: 'tensorrt-cu13>=11,<12'), onnxruntime-gpu in place of onnxruntime, NVIDIA driver for CUDA 13")
SUPPORTED_MAJORS = (10, 11)
WORKSPACE_BYTES = 8 << 30
IMAGE_COMPONENTS = ("text_encoder", "unet", "vae_decoder")

Shape = tuple[int, ...]
Profiles = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)


# --- the GPU-free parts: versions, precision plan, profiles, cache keys ------------------------------------
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


def llm_profiles(config: dict[str, Any], max_total_tokens: int, opt_prompt_tokens: int = 64,
                 input_names: tuple[str, ...] | None = None) -> Profiles:
    """One profile for a KV-cache decoder covering prefill (the whole prompt, empty cache) and every decode step.

    Every dynamic input gets a range, past_key_values included; without them an engine (or the ONNX Runtime
    TensorRT provider) is rebuilt whenever a shape changes.
    """
    from backends.loops import kv_cache_layout

    layers = config.get("num_hidden_layers") or config.get("n_layer")
    if not layers or not (config.get("num_attention_heads") or config.get("n_head")):
        raise ArenaError("The model config lacks num_hidden_layers/num_attention_heads: cannot build TensorRT "
                         "profiles for it.")
    names = input_names or tuple(f"past_key_values.{i}.{k}" for i in range(int(layers)) for k in ("key", "value"))
    _, kv_heads, head_dim = kv_cache_layout(names, config)
    last = max(2, int(max_total_tokens))
    opt = max(1, min(opt_prompt_tokens, last - 1))
    profiles: Profiles = {}
    for name in ("input_ids", "position_ids"):
        profiles[name] = ((1, 1), (1, opt), (1, last))
    profiles["attention_mask"] = ((1, 1), (1, opt), (1, last))
    for layer in range(int(layers)):
        for kind in ("key", "value"):
            profiles[f"past_key_values.{layer}.{kind}"] = ((1, kv_heads, 0, head_dim), (1, kv_heads, opt, head_dim),
                                                           (1, kv_heads, last - 1, head_dim))
    if input_names is not None:
        profiles = {k: v for k, v in profiles.items() if k in input_names}
    return profiles


def image_profiles(component: str, configs: dict[str, dict[str, Any]], height: int, width: int,
                   max_length: int) -> Profiles:
    """Static shapes for one diffusion component at one image size (batch 1 or 2 for classifier-free guidance).

    The engine is built for the size of the run (fastest kernels) and cached per size.
    """
    vae = configs["vae"]
    factor = 2 ** (len(vae.get("block_out_channels", (0, 0, 0, 0))) - 1)
    if height % factor or width % factor:
        raise ArenaError(f"height and width have to be divisible by {factor} but are {height} and {width}.")
    lh, lw = height // factor, width // factor
    if component == "text_encoder":
        return {"input_ids": ((1, max_length), (1, max_length), (1, max_length))}
    if component == "unet":
        unet = configs["unet"]
        c, hidden = unet.get("in_channels", 4), unet.get("cross_attention_dim", 768)
        hidden = hidden[0] if isinstance(hidden, list | tuple) else hidden
        return {"sample": ((1, c, lh, lw), (2, c, lh, lw), (2, c, lh, lw)),
                "timestep": ((1,), (2,), (2,)),
                "encoder_hidden_states": ((1, max_length, hidden), (2, max_length, hidden), (2, max_length, hidden))}
    if component == "vae_decoder":
        c = vae.get("latent_channels", 4)
        return {"latent_sample": ((1, c, lh, lw), (1, c, lh, lw), (1, c, lh, lw))}
    raise ArenaError(f"Unknown diffusion component {component!r}.")


def to_ort_trt_options(profiles: Profiles) -> dict[str, str]:
    """The same profiles as ONNX Runtime's TensorRT provider options (``name:1x64,...``)."""
    def fmt(index: int) -> str:
        return ",".join(f"{name}:{'x'.join(map(str, shapes[index]))}" for name, shapes in profiles.items())

    return {"trt_profile_min_shapes": fmt(0), "trt_profile_opt_shapes": fmt(1), "trt_profile_max_shapes": fmt(2)}


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


def check_profile_covers(required: dict[str, Shape], engine_profiles: Profiles) -> list[str]:
    """Why an engine cannot take these input shapes (empty when every input fits its profile range)."""
    problems = []
    for name, shape in required.items():
        if name not in engine_profiles:
            problems.append(f"the engine has no input '{name}'")
            continue
        low, _, high = engine_profiles[name]
        if len(low) != len(shape) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True)):
            problems.append(f"'{name}' {tuple(shape)} is outside the engine's profile {tuple(low)}..{tuple(high)}")
    return problems


# --- the GPU side -----------------------------------------------------------------------------------------
class TrtRunner:
    """A deserialized engine as a runner (see `backends.loops`): torch CUDA tensors in, torch CUDA tensors out."""

    device = "cuda"  # where the buffers live (the bindings conformance test runs this class on the CPU)

    def _stream_handle(self) -> int:
        return self.torch.cuda.current_stream().cuda_stream

    def __init__(self, engine_bytes: bytes, label: str) -> None:
        import tensorrt as trt
        import torch

        self.trt, self.torch, self.label = trt, torch, label
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ArenaError(f"TensorRT {trt.__version__} cannot load the {label} engine: it was built by another "
                             "TensorRT version or for another GPU. Rebuild it on this machine.")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = tuple(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = tuple(n for n in names if n not in self.input_names)
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                  trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64, trt.DataType.BOOL: torch.bool,
                  trt.DataType.BF16: torch.bfloat16}
        self.dtypes = {n: dtypes[self.engine.get_tensor_dtype(n)] for n in names}
        self.input_ranks = {n: len(self.engine.get_tensor_shape(n)) for n in self.input_names}
        self._empty = torch.empty(1, device=self.device)  # a valid address for zero-size tensors (an empty KV cache)

    def profiles(self) -> Profiles:
        """Each input's (min, opt, max) in profile 0; a static input's one shape three times."""
        out: Profiles = {}
        for name in self.input_names:
            shape = tuple(self.engine.get_tensor_shape(name))
            out[name] = (tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(name, 0))
                         if any(d < 0 for d in shape) else (shape, shape, shape))
        return out

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        torch = self.torch
        keep = []
        for name in self.input_names:
            tensor = inputs[name].to(device=self.device, dtype=self.dtypes[name]).contiguous()
            keep.append(tensor)
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                low, _, high = self.profiles()[name]
                raise ArenaError(f"The {self.label} engine cannot take '{name}' of shape {tuple(tensor.shape)}: its "
                                 f"profile allows {low}..{high}. Rebuild the engine for this length or size.")
            self.context.set_tensor_address(name, tensor.data_ptr() if tensor.numel() else self._empty.data_ptr())
        outputs = {}
        for name in self.output_names:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, out.data_ptr() if out.numel() else self._empty.data_ptr())
            outputs[name] = out
        if not self.context.execute_async_v3(self._stream_handle()):
            raise RuntimeError(f"TensorRT failed to run the {self.label} engine (see the worker log).")
        return outputs


class TensorRTBackend(Backend):
    """TensorRT engines from the ONNX export; torch CUDA tensors as buffers."""

    name = "tensorrt"
    title = "TensorRT"
    option_names = ("precision",)

    @classmethod
    def availability(cls, env: dict[str, Any]) -> Availability:
        trt = env.get("tensorrt", {})
        if not trt.get("installed"):
            detail = trt.get("error") or "the tensorrt package is not installed"
            return Availability(False, f"TensorRT cannot be imported ({detail}).", TRT_INSTALL)
        major = trt_major(trt.get("version", "0"))
        if major not in SUPPORTED_MAJORS:
            return Availability(False, f"TensorRT {trt.get('version')} is installed; this backend needs TensorRT "
                                       "10 or 11.", TRT_INSTALL)
        torch_facts = env.get("torch", {})
        if not torch_facts.get("cuda_available"):
            why = "sees no GPU" if torch_facts.get("cuda_build") else "is a CPU-only build"
            return Availability(False, f"TensorRT needs a CUDA GPU and a CUDA build of torch (torch "
                                       f"{torch_facts.get('version', '?')} {why}).", TORCH_CUDA_INSTALL)
        if not env.get("optimum_onnx", {}).get("installed"):
            return Availability(False, "optimum-onnx is needed for the ONNX export engines are built from.",
                                "pip install 'optimum-onnx[onnxruntime]==0.1.0'")
        return AVAILABLE

    @classmethod
    def options(cls, env: dict[str, Any]) -> dict[str, list[OptionChoice]]:
        whole = cls.availability(env)
        return {"precision": [OptionChoice("fp32", "fp32", whole), OptionChoice("fp16", "fp16", whole)]}

    def __init__(self) -> None:
        self.runners: dict[str, TrtRunner] = {}
        self.pipeline: dict[str, Any] = {}
        self._info: dict[str, Any] = {}
        self._config: dict[str, Any] = {}
        self._spec = None

    # --- loading ----------------------------------------------------------------------------------------
    def load(self, model, spec, ctx: LoadContext) -> None:
        import tensorrt as trt
        import torch

        from backends.onnxruntime_backend import cached_export

        gpu = torch.cuda.get_device_name()
        capability = ".".join(map(str, torch.cuda.get_device_capability()))
        self._spec = spec
        exports: dict[str, Path] = {}
        built_any = False

        def export_dir(dtype: str) -> Path:
            nonlocal built_any
            if dtype not in exports:
                exports[dtype], built = cached_export(model, dtype, ctx)
                built_any = built_any or built
            return exports[dtype]

        def engine(label: str, onnx_path: Path, plan: PrecisionPlan, profiles: Profiles) -> TrtRunner:
            fields = engine_cache_fields(onnx_digest(onnx_path), trt.__version__, gpu, capability, profiles, plan)
            with ctx.stage("engine_build", f"TensorRT: building the {label} engine (once, then cached)"):
                folder, _ = ctx.cache.get_or_build(
                    "trt-engine", fields,
                    lambda tmp: run_isolated("backends.tensorrt_backend:build_engine_file", str(onnx_path),
                                             str(tmp / "engine.trt"), asdict(plan),
                                             {k: [list(s) for s in v] for k, v in profiles.items()},
                                             description=f"TensorRT {label} engine build", progress=ctx.progress,
                                             log_path=os.environ.get("ARENA_WORKER_LOG"))
                    or {"source": str(onnx_path)})
            with ctx.stage("load", f"TensorRT: loading the {label} engine"):
                return TrtRunner((folder / "engine.trt").read_bytes(), label)

        if model.task == "image":
            configs = {part: json.loads((Path(model.model_dir) / part / "config.json").read_text())
                       for part in ("unet", "vae")}
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(Path(model.model_dir) / "tokenizer")
            for part in IMAGE_COMPONENTS:
                plan = precision_plan(trt.__version__, spec.precision, part, spec.vae_fp32,
                                      bool(configs["unet"].get("upcast_attention")))
                if plan.note:
                    ctx.notes.append(plan.note)
                profiles = image_profiles(part, configs, model.height, model.width, tokenizer.model_max_length)
                if part == "unet" and spec.engine_path:
                    self.runners[part] = self._user_engine(spec.engine_path, profiles, ctx)
                    continue
                self.runners[part] = engine(part, export_dir(plan.onnx_dtype) / part / "model.onnx", plan, profiles)
            self.pipeline = {"tokenizer": tokenizer, "vae_scaling": configs["vae"].get("scaling_factor", 0.18215)}
        else:
            plan = precision_plan(trt.__version__, spec.precision)
            onnx_path = export_dir(plan.onnx_dtype) / "model.onnx"
            import onnx

            names = tuple(i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input)
            self._config = json.loads((Path(model.model_dir) / "config.json").read_text())
            length = min(model.context_length or 2048, 4096)
            self.runners["decoder"] = engine("decoder", onnx_path, plan,
                                             llm_profiles(self._config, length, input_names=names))
            self._input_names = names
        self._info = {"provider": f"TensorRT {trt.__version__} on {gpu} (sm {capability})",
                      "artifact_dir": str(next(iter(exports.values()), "")), "export_cached": not built_any,
                      "tensorrt": trt.__version__, "threads": torch_threads()}

    def _user_engine(self, engine_path: str, required: Profiles, ctx: LoadContext) -> TrtRunner:
        path = Path(engine_path).expanduser()
        if not path.is_file():
            raise ArenaError(f"The TensorRT engine '{engine_path}' does not exist.")
        with ctx.stage("load", "TensorRT: loading your UNet engine"):
            runner = TrtRunner(path.read_bytes(), "UNet (your engine)")
        # The largest shapes of this run; the timestep's form (scalar or per row) is the engine's own choice.
        shapes = {name: shapes[2] for name, shapes in required.items() if name != "timestep"}
        problems = check_profile_covers(shapes, runner.profiles())
        if problems:
            raise ArenaError(f"Your UNet engine cannot run this image size: {'; '.join(problems)}.")
        ctx.notes.append(f"user UNet engine {path}")
        return runner

    # --- running ----------------------------------------------------------------------------------------
    def generate_text(self, prompt_ids, settings, on_token: Callable[[int], None]) -> list[int]:
        import torch

        from backends.loops import kv_greedy_generate

        ids = kv_greedy_generate(self.runners["decoder"], self._input_names, self._config, prompt_ids, settings,
                                 on_token, device="cuda")
        torch.cuda.synchronize()
        return ids

    def forward_logits(self, token_ids: list[int]) -> Any:
        import torch

        from backends.loops import kv_cache_layout

        layers, kv_heads, head_dim = kv_cache_layout(self._input_names, self._config)
        n = len(token_ids)
        feeds = {"input_ids": torch.tensor([token_ids], device="cuda"),
                 "attention_mask": torch.ones((1, n), dtype=torch.long, device="cuda"),
                 "position_ids": torch.arange(n, device="cuda")[None],
                 **{f"past_key_values.{i}.{k}": torch.zeros((1, kv_heads, 0, head_dim), device="cuda")
                    for i in range(layers) for k in ("key", "value")}}
        out = self.runners["decoder"](**{k: v for k, v in feeds.items() if k in self._input_names})
        return out["logits"][0].float().cpu().numpy()

    def generate_image(self, model, settings, on_phase, on_step) -> Any:
        import diffusers
        import torch

        from backends.loops import components_generate

        config = json.loads(model.scheduler)
        scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
        half = self._spec.precision == "fp16"
        return components_generate(
            self.runners["text_encoder"], self.runners["unet"], self.runners["vae_decoder"],
            self.pipeline["tokenizer"], scheduler, self.pipeline["vae_scaling"], model, settings, on_phase, on_step,
            device="cuda", dtype=torch.float16 if half else torch.float32,
            vae_dtype=torch.float32 if (self._spec.vae_fp32 or not half) else torch.float16)

    def runtime_info(self) -> dict[str, Any]:
        return dict(self._info)

    def unload(self) -> None:
        import gc

        self.runners, self.pipeline = {}, {}
        gc.collect()
