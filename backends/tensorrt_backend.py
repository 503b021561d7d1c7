"""TensorRT: native engines built from this project's ONNX exports with the TensorRT Python API (10 and 11).

- One engine per graph: the LLM decoder with KV cache (one optimization profile covering prefill and decode up
  to the chosen length), and the text encoder, UNet and VAE decoder of a diffusion pipeline.
- Precision: TensorRT 11 networks are strongly typed and have no FP16 builder flag, so fp16 engines come from an
  fp16 ONNX graph; TensorRT 10 builds fp16 from the fp32 graph with ``BuilderFlag.FP16`` (weak typing). "Keep the
  VAE in fp32" builds the VAE decoder from the fp32 graph without the flag.
- Engines are built in a separate short-lived process (a builder crash is reported, not inherited), serialized
  into the artifact cache atomically and keyed by the ONNX graph's hash, the TensorRT version, the GPU name and
  compute capability, the profile shapes and the precision plan (`backends.conversion.tensorrt_build`; the
  profiles are `backends.conversion.tensorrt_profiles`). Engine build time is reported apart from the ONNX
  export.
- Inference uses torch CUDA tensors as the engine's buffers (``set_tensor_address`` + ``execute_async_v3`` on
  torch's current stream); the generation loops are the runtime-agnostic ones in `backends.loops`.
- An existing serialized UNet engine (a ``unet.trt`` built elsewhere) can replace the built one; its profile
  must cover the shapes of the run, which is checked before anything runs.

Nothing here is imported at module import time: the UI process lists the backend without loading TensorRT.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.contract import (
    AVAILABLE,
    ArenaError,
    Availability,
    Backend,
    BackendOptions,
    LoadContext,
    OptionChoice,
    option,
    precision_label,
    vae_fp32_option,
)
from backends.conversion.onnx_export import cached_export
from backends.conversion.tensorrt_build import (
    SUPPORTED_MAJORS,
    TRT_INSTALL,
    PrecisionPlan,
    cached_engine,
    precision_plan,
    trt_major,
)
from backends.conversion.tensorrt_profiles import Profiles, check_profile_covers, image_profiles, llm_profiles
from backends.hf import torch_facts, torch_threads
from backends.installs import ONNX_EXPORTER_INSTALL, TORCH_CUDA_INSTALL

IMAGE_COMPONENTS = ("text_encoder", "unet", "vae_decoder")


@dataclass(frozen=True)
class TensorRTOptions(BackendOptions):
    precision: str = option("fp32", choices=("fp32", "fp16"), help="fp16 engines: from the fp16 graph on "
                            "TensorRT 11, with the FP16 builder flag on TensorRT 10.")
    vae_fp32: bool = vae_fp32_option()
    engine_path: str | None = option(None, kind="path", tasks=("image",), label="Existing UNet engine (optional)",
                                     help="A serialized TensorRT UNet built elsewhere; its profile must cover this "
                                          "image size.", placeholder="/path/to/unet.trt")


def tensorrt_facts() -> dict[str, Any]:
    """Whether the tensorrt package imports here, and its version."""
    if importlib.util.find_spec("tensorrt") is None:
        return {"installed": False}
    try:
        import tensorrt

        return {"installed": True, "version": tensorrt.__version__}
    except Exception as exc:  # noqa: BLE001
        return {"installed": False, "error": f"{type(exc).__name__}: {exc}"}


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
    aliases = ("trt",)
    title = "TensorRT"
    Options = TensorRTOptions
    color = "#76b900"

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        return " · ".join([cls.title, precision_label(values)]
                          + (["user UNet engine"] if values.get("engine_path") else []))

    @classmethod
    def collect_facts(cls) -> dict[str, Any]:
        from backends.conversion.onnx_export import onnx_exporter_facts

        # engines run on torch CUDA buffers and are built from the dynamo exporter's ONNX
        return {"tensorrt": tensorrt_facts(), "torch": torch_facts(), "onnx_exporter": onnx_exporter_facts()}

    @classmethod
    def machine_facts(cls, env: Mapping[str, Any]) -> dict[str, Any]:
        return {"runtime": "TensorRT: " + ((env.get("tensorrt") or {}).get("version") or "not installed")}

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("tensorrt",)

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
        if not env.get("onnx_exporter", {}).get("installed"):
            return Availability(False, "onnxscript is needed for torch.onnx's dynamo exporter, whose ONNX export "
                                       "the engines are built from.", ONNX_EXPORTER_INSTALL)
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
            path = cached_engine(ctx, label, onnx_path, plan, profiles, trt.__version__, gpu, capability)
            with ctx.stage("load", f"TensorRT: loading the {label} engine"):
                return TrtRunner(path.read_bytes(), label)

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
                      "tensorrt": trt.__version__, "threads": torch_threads(ctx.threads)}

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

    def cached_step_logits(self, prompt_ids: list[int], answer_ids: list[int]) -> Any:
        from backends.loops import kv_step_logits

        return kv_step_logits(self.runners["decoder"], self._input_names, self._config, prompt_ids, answer_ids,
                              device="cuda")

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
