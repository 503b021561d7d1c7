"""The ONNX Runtime backend: a decoder graph with KV cache driven by the arena's own greedy loop
(`backends.loops.kv_greedy_generate`), or a diffusion pipeline's component graphs, over an export made here
(cached; torch.onnx's dynamo exporter or the GenAI model builder) or a user's (optimum-cli's layouts)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backends.contract import AVAILABLE, ArenaError, Availability, LoadContext, OptionChoice
from backends.conversion.onnx_export import EXPORTER_TITLES, cached_export, exporter_of, onnx_exporter_facts
from backends.conversion.onnx_quantize import WeightOnlySettings, cached_dynamic_int8, cached_weight_only
from backends.conversion.tensorrt_profiles import image_profiles, llm_profiles, to_ort_trt_options
from backends.hf import HFBackend, ort_session_options, torch_facts
from backends.onnxruntime.layout import find_onnx_model, find_pipeline_export, pipeline_layout
from backends.onnxruntime.options import (
    GRAPH_OPTIMIZATION,
    IMAGE_QUANTIZATION_REFUSAL,
    QUANTIZED,
    WEIGHT_ONLY_BITS,
    OnnxRuntimeOptions,
)
from backends.onnxruntime.precision import TOLERANCE_CLASSES, graph_precision
from backends.onnxruntime.providers import (
    GPU_PROVIDERS,
    ORT_GPU_INSTALL,
    ORT_INSTALL,
    ORT_TRT_INSTALL,
    PROVIDER_NAMES,
    PROVIDERS,
    captured_stderr,
    fallback_warnings,
    load_gpu_libraries,
    onnxruntime_facts,
    provider_status,
    provider_summary,
    usable_providers,
)

GENAI_BUILDER_INSTALL = "pip install onnxruntime-genai==0.18.0"


class OnnxRuntimeBackend(HFBackend):
    """An ONNX Runtime session over a KV-cache decoder graph with the arena's greedy loop, or a diffusion
    pipeline's component sessions."""

    name = "onnxruntime"
    preload_modules = ("onnxruntime",)
    aliases = ("onnx", "ort", "onnx runtime")
    title = "ONNX Runtime"
    Options = OnnxRuntimeOptions
    color = "#005ced"

    @classmethod
    def tolerance_class(cls, precision: str) -> str:
        """int8-dynamic is judged as int8 (`TOLERANCE_CLASSES`); a user's graph reports a class itself."""
        return TOLERANCE_CLASSES.get(precision) or super().tolerance_class(precision)

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        provider = values["provider"]
        parts = [cls.title, PROVIDER_NAMES.get(provider, provider.replace("ExecutionProvider", "")),
                 values["precision"]]
        if values["precision"] in WEIGHT_ONLY_BITS:  # settings away from the defaults are named
            defaults = {i.name: i.default for i in cls.Options.fields_info()}
            words = {"block_size": "block {}", "symmetric": "{}", "accuracy_level": "accuracy level {}",
                     "embedding_bits": "embedding {}"}
            for name, word in words.items():
                if values.get(name, defaults[name]) != defaults[name]:
                    value = values[name]
                    parts.append("asymmetric" if name == "symmetric" and not value else word.format(value))
        if values.get("graph_optimization", "all") != "all":
            parts.append(f"graph opt {values['graph_optimization']}")
        if values.get("threads", "auto") != "auto":
            parts.append(f"{values['threads']} threads")
        if values.get("onnx_dir"):
            parts.append("user export")
        elif values.get("exporter", "dynamo") != "dynamo":
            parts.append(EXPORTER_TITLES.get(values["exporter"], values["exporter"]))
        return " · ".join(parts)

    @classmethod
    def collect_facts(cls) -> dict[str, Any]:
        import importlib.util

        return {"onnxruntime": onnxruntime_facts(), "onnx_exporter": onnx_exporter_facts(),
                "genai_builder": {"installed": importlib.util.find_spec("onnxruntime_genai") is not None},
                "torch": torch_facts()}  # an export needs torch

    @classmethod
    def machine_facts(cls, env: Mapping[str, Any]) -> dict[str, Any]:
        ort = env.get("onnxruntime") or {}
        return {"runtime": f"onnxruntime {ort.get('version', 'not installed')}, providers: {provider_summary(ort)}",
                "cuda": ort.get("cuda_version")}

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "onnxruntime-genai")

    def __init__(self) -> None:
        super().__init__()
        self.components: dict[str, Any] | None = None  # sessions of a diffusers conversion-script export

    @classmethod
    def availability(cls, env: dict[str, Any]) -> Availability:
        ort = env.get("onnxruntime", {})
        if not ort.get("installed"):
            return Availability(False, f"onnxruntime cannot be imported ({ort.get('error', 'not installed')}).",
                                ORT_INSTALL)
        return AVAILABLE

    @classmethod
    def options(cls, env: dict[str, Any]) -> dict[str, list[OptionChoice]]:
        ort = env.get("onnxruntime", {})
        listed, have = set(ort.get("providers", [])), set(usable_providers(ort))
        version = ort.get("version", "?")
        providers = [OptionChoice("auto", "auto (CUDA if it starts, else CPU)")]
        for provider, label in PROVIDERS.items():
            if provider in have:
                providers.append(OptionChoice(provider, label))
                continue
            if provider in listed:  # built in, but it did not start (see provider_status)
                reason = ort.get("provider_status", {}).get(provider, {}).get("reason", "")
                built = f" (built for CUDA {ort['cuda_version']})" if ort.get("cuda_version") else ""
                fix = f"pip install 'onnxruntime-gpu[cuda,cudnn]=={version}'  # the CUDA and cuDNN libraries it " \
                      "was built for, from pip; an NVIDIA driver for that CUDA"
                if provider == "TensorrtExecutionProvider":
                    fix = fix.split("  #")[0] + " 'tensorrt-cu13>=10.13,<11'  # and TensorRT 10 (libnvinfer.so.10)"
                why = Availability(False, f"onnxruntime-gpu {version}{built} has the {label} provider, but it cannot "
                                          f"start here: {reason}.", fix)
            elif provider == "CUDAExecutionProvider":
                why = Availability(False, f"onnxruntime {version} has no CUDA provider (CPU package).", ORT_GPU_INSTALL)
            else:
                why = Availability(False, f"onnxruntime {version} has no TensorRT provider.", ORT_TRT_INSTALL)
            providers.append(OptionChoice(provider, label, why))
        gpu = "CUDAExecutionProvider" in have or "TensorrtExecutionProvider" in have
        cuda_torch = env.get("torch", {}).get("cuda_available", False)
        fp16 = AVAILABLE if gpu and cuda_torch else Availability(
            False, "an fp16 export runs on CUDA (export with torch on a GPU, run with the CUDA or TensorRT "
                   "provider).", ORT_GPU_INSTALL)
        dynamo = env.get("onnx_exporter") or {"installed": True}
        builder = env.get("genai_builder") or {"installed": True}
        return {
            "provider": providers,
            "precision": [OptionChoice("fp32", "fp32"), OptionChoice("fp16", "fp16", fp16),
                          OptionChoice("int8", "int8 (weight-only, CPU)"),
                          OptionChoice("int4", "int4 (weight-only, CPU)"),
                          OptionChoice("int8-dynamic", "int8 dynamic (weights and activations, CPU)")],
            # last: `check_spec` lets an existing export (onnx_dir) through whatever the exporters here
            "exporter": [OptionChoice("dynamo", EXPORTER_TITLES["dynamo"], AVAILABLE if dynamo.get("installed") else
                                      Availability(False, f"{dynamo.get('missing', 'onnxscript')} is not installed.",
                                                   dynamo.get("install", ""))),
                         OptionChoice("genai-builder", EXPORTER_TITLES["genai-builder"],
                                      AVAILABLE if builder.get("installed") else Availability(
                                          False, "onnxruntime-genai is not installed.", GENAI_BUILDER_INSTALL))],
        }

    @classmethod
    def check_spec(cls, spec, env, task=None):
        problem = super().check_spec(spec, env, task)
        if problem and spec.onnx_dir and problem.startswith(f"{cls.title} exporter '"):
            problem = None  # an existing export needs no exporter (the exporter is the last option checked)
        if problem:
            return problem
        provider = cls.resolve_provider(spec.provider, usable_providers(env.get("onnxruntime", {})))
        if spec.precision == "int8-dynamic" and provider != "CPUExecutionProvider":
            return ("int8 dynamic quantization runs on the CPU provider only (the CUDA provider has no dynamic "
                    "quantization kernels; TensorRT needs static QDQ). Pick provider CPUExecutionProvider.")
        if spec.precision in WEIGHT_ONLY_BITS and provider != "CPUExecutionProvider":
            return (f"{spec.precision} weight-only quantization is built for the CPU provider here (the CUDA "
                    "provider's MatMulNBits kernels and TensorRT's are not set up in this arena). Pick provider "
                    "CPUExecutionProvider.")
        if spec.precision == "fp16" and provider == "CPUExecutionProvider":
            return "fp16 ONNX models are slow or unsupported on the CPU provider: pick CUDA or TensorRT."
        if spec.exporter == "genai-builder" and spec.precision == "fp16" and not spec.onnx_dir:
            return ("The GenAI model builder's exports here are fp32 (its fp16 build is made for the GenAI backend "
                    "on CUDA): pick the torch.onnx (dynamo) exporter for fp16.")
        return None

    @staticmethod
    def weight_only_settings(spec: Any) -> WeightOnlySettings:
        embedding = spec.embedding_bits
        return WeightOnlySettings(bits=WEIGHT_ONLY_BITS[spec.precision], block_size=int(spec.block_size),
                                  symmetric=bool(spec.symmetric), accuracy_level=int(spec.accuracy_level),
                                  embedding_bits=0 if embedding == "fp32" else int(embedding))

    @staticmethod
    def resolve_provider(requested: str, available: list[str]) -> str:
        if requested != "auto":
            return requested
        return "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else "CPUExecutionProvider"

    # --- worker side -------------------------------------------------------------------------------
    def load(self, model, spec, ctx: LoadContext) -> None:
        import onnxruntime

        listed = onnxruntime.get_available_providers()
        if spec.provider == "auto" and "CUDAExecutionProvider" in listed:  # listed is not the same as usable
            status = provider_status(["CUDAExecutionProvider"])
            listed = usable_providers({"providers": listed, "provider_status": status})
            if not status["CUDAExecutionProvider"]["ok"]:
                ctx.notes.append(f"auto: onnxruntime-gpu {onnxruntime.__version__}'s CUDA provider cannot start "
                                 f"here ({status['CUDAExecutionProvider']['reason']}), so this runs on the CPU")
        provider = self.resolve_provider(spec.provider, listed)
        if provider in GPU_PROVIDERS:
            load_gpu_libraries(onnxruntime, provider)
        image = model.task == "image"
        if image and spec.precision in QUANTIZED:
            raise ArenaError(IMAGE_QUANTIZATION_REFUSAL.format(precision=spec.precision))
        export_cached: bool | None
        precision = spec.precision  # a user's export: what its graph says (`graph_precision`)
        if spec.onnx_dir:
            onnx_dir = (find_pipeline_export if image else find_onnx_model)(spec.onnx_dir).parent
            if image:
                onnx_dir = onnx_dir.parent  # unet/model.onnx -> the pipeline folder
            export_cached = None
            ctx.notes.append(f"user export {onnx_dir}")
            if not image:
                precision, how = graph_precision(find_onnx_model(onnx_dir))
                ctx.notes.append(f"user export: {precision} {how}")
        else:
            onnx_dir, built = cached_export(model, "fp16" if spec.precision == "fp16" else "fp32", ctx,
                                            exporter=spec.exporter)
            export_cached = not built
            if spec.exporter != "dynamo":
                ctx.notes.append(f"exporter: {EXPORTER_TITLES[spec.exporter]}")
        if spec.precision in WEIGHT_ONLY_BITS:
            settings = self.weight_only_settings(spec)
            onnx_dir, built_q = cached_weight_only(Path(onnx_dir), settings, ctx)
            ctx.notes.append(settings.describe())
            export_cached = None if export_cached is None else export_cached and not built_q
        elif spec.precision == "int8-dynamic":
            onnx_dir, built_q = cached_dynamic_int8(Path(onnx_dir), ctx)
            ctx.notes.append("dynamic int8: per-channel weights, activations quantized at run time, output "
                             "projection kept fp32")
            export_cached = None if export_cached is None else export_cached and not built_q

        provider_options: dict[str, Any] = {}
        if provider == "TensorrtExecutionProvider":
            provider_options = self._trt_provider_options(model, spec, Path(onnx_dir), ctx)
        session_options = ort_session_options(onnxruntime, ctx.threads)  # the CPU budget, not os.cpu_count()
        if spec.threads != "auto":
            session_options.intra_op_num_threads = int(spec.threads)
        session_options.graph_optimization_level = getattr(
            onnxruntime.GraphOptimizationLevel, GRAPH_OPTIMIZATION[spec.graph_optimization])
        session_options.log_severity_level = 2  # warnings (CPU fallbacks) land in the worker log
        self.components = None
        with ctx.stage("load", f"ONNX Runtime: creating the {PROVIDERS.get(provider, provider)} session"), \
                captured_stderr() as native_log:
            if image and pipeline_layout(onnx_dir) == "diffusers":
                self._diffusers_layout(model, Path(onnx_dir), provider, provider_options, session_options, ctx)
            elif image:  # optimum-cli's text-to-image layout (the arena's export writes it too)
                from backends.onnxruntime.pipeline import OnnxDiffusionPipeline

                self.model = OnnxDiffusionPipeline.from_export(
                    onnx_dir, provider=provider, provider_options=provider_options or None,
                    session_options=session_options)
            else:
                self._text_session(model, Path(onnx_dir), provider, provider_options, session_options)
        ran = list(self.components["providers"] if self.components else self.model.providers)
        if ran and ran[0] != provider:
            ctx.notes.append(f"requested {provider} but the session runs on {ran[0]}")
        if provider != "CPUExecutionProvider":
            ctx.notes.extend(f"ONNX Runtime: {w}" for w in fallback_warnings(native_log))
        self.device = "cpu" if self.components or not image else self.model.device.type
        self._info = {"provider": ran[0] if ran else provider, "session_providers": ran,
                      "artifact_dir": str(onnx_dir), "export_cached": export_cached,
                      "exporter": exporter_of(onnx_dir) if not image else spec.exporter,
                      "onnxruntime": onnxruntime.__version__, "precision": precision,
                      "threads": self._session_threads(session_options.intra_op_num_threads)}

    def _text_session(self, model, root: Path, provider: str, provider_options: dict, session_options: Any) -> None:
        """The decoder session of a KV-cache export (the arena's, the GenAI builder's or optimum-cli's layout)
        and the facts the loop needs: its inputs, the cache's shape per layer, and the model's config."""
        from backends.loops import OrtRunner

        providers = [(provider, provider_options)] if provider_options else [provider]
        self.model = OrtRunner(str(find_onnx_model(root)), providers, session_options)
        config_path = root / "config.json" if (root / "config.json").is_file() else Path(model.model_dir) / \
            "config.json"
        self._config = json.loads(config_path.read_text()) if config_path.is_file() else {}

    def generate_text(self, prompt_ids, settings, on_token):
        from backends.loops import kv_greedy_generate

        return kv_greedy_generate(self.model, self.model.input_names, self._config, prompt_ids, settings, on_token,
                                  kv_shapes=self.model.past_shapes())

    def cached_step_logits(self, prompt_ids: list[int], answer_ids: list[int]) -> Any:
        from backends.loops import kv_step_logits

        return kv_step_logits(self.model, self.model.input_names, self._config, prompt_ids, answer_ids,
                              kv_shapes=self.model.past_shapes())

    def forward_logits(self, token_ids: list[int]) -> Any:
        from backends.loops import kv_forward_logits

        return kv_forward_logits(self.model, self.model.input_names, self._config, token_ids,
                                 kv_shapes=self.model.past_shapes())

    def _session_threads(self, fallback: int) -> int:
        """The intra-op thread count the (text decoder or UNet) session really got."""
        session = (self.components["unet"].session if self.components
                   else getattr(self.model, "session", None) or getattr(getattr(self.model, "unet", None), "session",
                                                                        None))
        try:
            return int(session.get_session_options().intra_op_num_threads)
        except (AttributeError, TypeError, ValueError):
            return fallback

    def _diffusers_layout(self, model, root: Path, provider: str, provider_options: dict, session_options: Any,
                          ctx: LoadContext) -> None:
        """Sessions for an export by diffusers' conversion script, driven by the shared component loop (that
        layout's UNet takes one timestep per batch row and its text encoder int32 ids; the runners adapt)."""
        from transformers import AutoTokenizer

        from backends.loops import OrtRunner

        providers = [(provider, provider_options)] if provider_options else [provider]
        runners = {part: OrtRunner(str(root / part / "model.onnx"), providers, session_options)
                   for part in ("text_encoder", "unet", "vae_decoder")}
        tokenizer_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else Path(model.model_dir) / "tokenizer"
        vae = json.loads((Path(model.model_dir) / "vae" / "config.json").read_text())
        self.components = {**runners, "tokenizer": AutoTokenizer.from_pretrained(tokenizer_dir),
                           "vae_scaling": vae.get("scaling_factor", 0.18215),
                           "providers": runners["unet"].session.get_providers()}
        ctx.notes.append("diffusers conversion-script layout")

    def generate_image(self, model, settings, on_phase, on_step):
        if not self.components:
            return super().generate_image(model, settings, on_phase, on_step)
        import diffusers

        from backends.loops import components_generate

        config = json.loads(model.scheduler)
        scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
        c = self.components
        return components_generate(c["text_encoder"], c["unet"], c["vae_decoder"], c["tokenizer"], scheduler,
                                   c["vae_scaling"], model, settings, on_phase, on_step)

    def unload(self) -> None:
        self.components = None
        super().unload()

    def image_component_outputs(self, model, settings, inputs=None):
        """The pipeline (`backends.onnxruntime.pipeline`) runs its text encoder, UNet and VAE decoder sessions like
        diffusers' modules (`diffusers_components`); a diffusers conversion-script export has bare sessions and is
        not compared."""
        if self.components is not None:
            raise NotImplementedError("ONNX Runtime compares the components of an export in optimum-cli's "
                                      "text-to-image layout only, not of a diffusers conversion-script export")
        return super().image_component_outputs(model, settings, inputs)

    def layer_outputs(self, token_ids: list[int], units: list[str]) -> dict[str, Any]:
        """The units' outputs from a copy of the loaded graph that also returns them (`onnx_layers`), on the
        provider the model runs on; units whose scope the graph's node names do not keep are left out."""
        import shutil
        import tempfile

        from backends.conversion.onnx_layers import layer_outputs

        if self.components is not None or self.model is None:
            raise NotImplementedError("ONNX Runtime exposes layer outputs of a text model only")
        if self._info.get("exporter") == EXPORTER_TITLES["genai-builder"]:
            # The builder fuses each layer's residual add into the next layer's norm: the last tensor of a layer's
            # scope is its MLP's output, not the layer's output, so comparing it would blame a correct layer.
            raise NotImplementedError("the GenAI model builder's graph fuses each layer's residual add into the "
                                      "next layer's norm, so no tensor of it is a layer's output")
        workdir = tempfile.mkdtemp(prefix="arena-layers-")
        try:
            return layer_outputs(find_onnx_model(Path(self._info["artifact_dir"])), token_ids, units, workdir,
                                 providers=self._info.get("session_providers") or None)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    @staticmethod
    def _trt_provider_options(model, spec, onnx_dir: Path, ctx: LoadContext) -> dict[str, Any]:
        """Engine cache and explicit profiles for every dynamic input: without them the TensorRT provider
        rebuilds its engines whenever a shape changes."""
        engine_dir = ctx.cache.root / "trt-ep" / onnx_dir.name
        engine_dir.mkdir(parents=True, exist_ok=True)
        options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engine_dir),
                   "trt_timing_cache_enable": True, "trt_fp16_enable": spec.precision == "fp16"}
        if model.task == "image":
            # One session per component shares these options: the UNet's profile is the one that matters (the
            # text encoder and VAE have static shapes at one image size); TensorRT ignores names it lacks.
            configs = {part: json.loads((Path(model.model_dir) / part / "config.json").read_text())
                       for part in ("unet", "vae")}
            tokenizer = json.loads((Path(model.model_dir) / "tokenizer" / "tokenizer_config.json").read_text())
            profiles = image_profiles("unet", configs, model.height, model.width,
                                      int(tokenizer.get("model_max_length", 77)))
        else:
            config = json.loads((Path(model.model_dir) / "config.json").read_text())
            profiles = llm_profiles(config, model.context_length or 2048)
        return options | to_ort_trt_options(profiles)

