"""ONNX Runtime through optimum-onnx: export with KV cache (cached on disk) or a user's export, then generate.

Execution providers come from what onnxruntime reports: CPU here; CUDA and TensorRT where onnxruntime-gpu and
TensorRT are installed. The export itself runs in a separate short-lived process (`run_isolated`): an exporter
segfault stays there, and torch's threads never share this worker with ONNX Runtime's.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from pathlib import Path
from typing import Any

from arena.errors import ArenaError
from arena.workers import run_isolated
from backends.base import (
    AVAILABLE,
    Availability,
    HFBackend,
    LoadContext,
    OptionChoice,
)

ORT_INSTALL = "pip install 'optimum-onnx[onnxruntime]==0.1.0'"
ORT_GPU_INSTALL = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu  # CUDA 12/13 + cuDNN 9"
ORT_TRT_INSTALL = (ORT_GPU_INSTALL.split("  #")[0] + " tensorrt-cu12  # TensorRT 10 libraries (libnvinfer.so.10) "
                   "on the library path")
PROVIDERS = {
    "CPUExecutionProvider": "CPU",
    "CUDAExecutionProvider": "CUDA",
    "TensorrtExecutionProvider": "TensorRT",
}
TEXT_TASK = "text-generation-with-past"
IMAGE_TASK = "text-to-image"
ONNX_LAYOUT_FILES = ("model.onnx", "decoder_model_merged.onnx", "decoder_with_past_model.onnx", "decoder_model.onnx")


def export_text_model(model_dir: str, output_dir: str, dtype: str, device: str) -> None:
    """Export a causal LM with KV cache to ``output_dir`` (runs in an isolated process)."""
    from optimum.exporters.onnx import main_export

    main_export(model_dir, output=output_dir, task=TEXT_TASK, device=device,
                dtype=None if dtype == "fp32" else dtype)


def export_pipeline(model_dir: str, output_dir: str, dtype: str, device: str) -> None:
    """Export a Stable Diffusion pipeline (text encoder, UNet, VAE encoder/decoder) to ``output_dir``."""
    from optimum.exporters.onnx import main_export

    main_export(model_dir, output=output_dir, task=IMAGE_TASK, device=device,
                dtype=None if dtype == "fp32" else dtype)


def find_pipeline_export(directory: str | Path) -> Path:
    """The UNet of a pipeline export directory (optimum's layout: text_encoder/, unet/, vae_decoder/ ...)."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ArenaError(f"The ONNX export directory '{directory}' does not exist.")
    missing = [f"{part}/model.onnx" for part in ("text_encoder", "unet", "vae_decoder")
               if not (root / part / "model.onnx").is_file()]
    if not (root / "model_index.json").is_file():
        missing.append("model_index.json")
    if missing:
        raise ArenaError(f"'{directory}' is not a Stable Diffusion ONNX export: missing {', '.join(missing)} "
                         "(expected the layout `optimum-cli export onnx --task text-to-image` writes).")
    return root / "unet" / "model.onnx"


def quantize_text_model(fp32_dir: str, output_dir: str) -> None:
    """Dynamic int8 (weights int8, activations quantized at run time) for the CPU provider."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = Path(fp32_dir), Path(output_dir)
    for item in source.iterdir():
        if item.suffix not in (".onnx", ".onnx_data") and item.name != "manifest.json" and item.is_file():
            shutil.copy2(item, target / item.name)
    large = any(p.suffix == ".onnx_data" or p.name.endswith(".onnx.data") for p in source.iterdir())
    quantize_dynamic(source / "model.onnx", target / "model.onnx", weight_type=QuantType.QInt8,
                     use_external_data_format=large)


def find_onnx_model(directory: str | Path) -> Path:
    """The decoder file of an export directory (optimum-cli's layout, or the legacy merged/with-past one)."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ArenaError(f"The ONNX export directory '{directory}' does not exist.")
    for name in ONNX_LAYOUT_FILES:
        if (root / name).is_file():
            return root / name
    found = sorted(p.name for p in root.glob("*.onnx"))
    raise ArenaError(
        f"'{directory}' has no {ONNX_LAYOUT_FILES[0]}"
        + (f" (found {', '.join(found)})" if found else "")
        + ": expected the layout `optimum-cli export onnx --task text-generation-with-past` writes.")


def trt_profile_shapes(config: dict[str, Any], max_total_tokens: int, opt_prompt_tokens: int = 64) -> dict[str, str]:
    """TensorRT execution provider profiles covering prefill and decode up to ``max_total_tokens``.

    Every dynamic input needs a range, past_key_values included; without them the engine is rebuilt whenever
    a shape changes, which is what makes the provider look unusably slow.
    """
    layers = config.get("num_hidden_layers") or config.get("n_layer")
    heads = config.get("num_attention_heads") or config.get("n_head")
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or (config.get("hidden_size") or config.get("n_embd")) // heads
    if not layers or not heads:
        raise ArenaError("The model config lacks num_hidden_layers/num_attention_heads: cannot build TensorRT "
                         "profiles for it.")
    last = max_total_tokens
    mins, opts, maxs = [], [], []
    for name, lo, op, hi in (("input_ids", "1x1", f"1x{opt_prompt_tokens}", f"1x{last}"),
                             ("attention_mask", "1x1", f"1x{opt_prompt_tokens}", f"1x{last}"),
                             ("position_ids", "1x1", f"1x{opt_prompt_tokens}", f"1x{last}")):
        mins.append(f"{name}:{lo}"), opts.append(f"{name}:{op}"), maxs.append(f"{name}:{hi}")
    for layer in range(int(layers)):
        for kind in ("key", "value"):
            name = f"past_key_values.{layer}.{kind}"
            mins.append(f"{name}:1x{kv_heads}x0x{head_dim}")
            opts.append(f"{name}:1x{kv_heads}x{opt_prompt_tokens}x{head_dim}")
            maxs.append(f"{name}:1x{kv_heads}x{last}x{head_dim}")
    return {"trt_profile_min_shapes": ",".join(mins), "trt_profile_opt_shapes": ",".join(opts),
            "trt_profile_max_shapes": ",".join(maxs)}


def _versions() -> dict[str, str | None]:
    out = {}
    for dist in ("optimum-onnx", "optimum", "transformers", "torch", "onnx", "onnxruntime", "onnxruntime-gpu"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


class OnnxRuntimeBackend(HFBackend):
    """`ORTModelForCausalLM` (KV cache) with greedy `generate`."""

    name = "onnxruntime"
    title = "ONNX Runtime"
    option_names = ("provider", "precision", "onnx_dir")

    @classmethod
    def availability(cls, env: dict[str, Any]) -> Availability:
        ort = env.get("onnxruntime", {})
        if not ort.get("installed"):
            return Availability(False, f"onnxruntime cannot be imported ({ort.get('error', 'not installed')}).",
                                ORT_INSTALL)
        if not env.get("optimum_onnx", {}).get("installed"):
            return Availability(False, "optimum-onnx is not installed.", ORT_INSTALL)
        return AVAILABLE

    @classmethod
    def options(cls, env: dict[str, Any]) -> dict[str, list[OptionChoice]]:
        have = set(env.get("onnxruntime", {}).get("providers", []))
        version = env.get("onnxruntime", {}).get("version", "?")
        providers = [OptionChoice("auto", "auto (CUDA if available, else CPU)")]
        for provider, label in PROVIDERS.items():
            if provider in have:
                providers.append(OptionChoice(provider, label))
                continue
            if provider == "CUDAExecutionProvider":
                why = Availability(False, f"onnxruntime {version} has no CUDA provider (CPU package).", ORT_GPU_INSTALL)
            else:
                why = Availability(False, f"onnxruntime {version} has no TensorRT provider.", ORT_TRT_INSTALL)
            providers.append(OptionChoice(provider, label, why))
        gpu = "CUDAExecutionProvider" in have or "TensorrtExecutionProvider" in have
        cuda_torch = env.get("torch", {}).get("cuda_available", False)
        fp16 = AVAILABLE if gpu and cuda_torch else Availability(
            False, "an fp16 export runs on CUDA (export with torch on a GPU, run with the CUDA or TensorRT "
                   "provider).", ORT_GPU_INSTALL)
        return {
            "provider": providers,
            "precision": [OptionChoice("fp32", "fp32"), OptionChoice("fp16", "fp16", fp16),
                          OptionChoice("int8", "int8 (dynamic quantization, CPU)")],
        }

    @classmethod
    def check_spec(cls, spec, env):
        problem = super().check_spec(spec, env)
        if problem:
            return problem
        provider = cls.resolve_provider(spec.provider, env.get("onnxruntime", {}).get("providers", []))
        if spec.precision == "int8" and provider != "CPUExecutionProvider":
            return ("int8 dynamic quantization runs on the CPU provider only (the CUDA provider has no dynamic "
                    "quantization kernels; TensorRT needs static QDQ). Pick provider CPUExecutionProvider.")
        if spec.precision == "fp16" and provider == "CPUExecutionProvider":
            return "fp16 ONNX models are slow or unsupported on the CPU provider: pick CUDA or TensorRT."
        return None

    @staticmethod
    def resolve_provider(requested: str, available: list[str]) -> str:
        if requested != "auto":
            return requested
        return "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else "CPUExecutionProvider"

    # --- worker side -------------------------------------------------------------------------------
    def load(self, model, spec, ctx: LoadContext) -> None:
        import onnxruntime

        provider = self.resolve_provider(spec.provider, onnxruntime.get_available_providers())
        image = model.task == "image"
        export_cached: bool | None
        if spec.onnx_dir:
            onnx_dir = (find_pipeline_export if image else find_onnx_model)(spec.onnx_dir).parent
            if image:
                onnx_dir = onnx_dir.parent  # unet/model.onnx -> the pipeline folder
            export_cached = None
            ctx.notes.append(f"user export {onnx_dir}")
        else:
            onnx_dir, built = self._export(model, spec, ctx)
            export_cached = not built

        provider_options: dict[str, Any] = {}
        if provider == "TensorrtExecutionProvider" and not image:
            config = json.loads((Path(model.model_dir) / "config.json").read_text())
            engine_dir = ctx.cache.root / "trt-ep" / Path(onnx_dir).name
            engine_dir.mkdir(parents=True, exist_ok=True)
            provider_options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engine_dir),
                                "trt_fp16_enable": spec.precision == "fp16",
                                **trt_profile_shapes(config, model.context_length or 2048)}
        session_options = onnxruntime.SessionOptions()
        session_options.log_severity_level = 2  # warnings (CPU fallbacks) land in the worker log
        with ctx.stage("load", f"ONNX Runtime: creating the {PROVIDERS.get(provider, provider)} session"):
            if image:
                from optimum.onnxruntime import ORTDiffusionPipeline

                self.model = ORTDiffusionPipeline.from_pretrained(
                    onnx_dir, provider=provider, provider_options=provider_options or None,
                    session_options=session_options, use_io_binding=provider == "CUDAExecutionProvider")
                self.model.set_progress_bar_config(disable=True)
            else:
                from optimum.onnxruntime import ORTModelForCausalLM

                self.model = ORTModelForCausalLM.from_pretrained(
                    onnx_dir, provider=provider, provider_options=provider_options or None,
                    session_options=session_options, use_cache=True,
                    use_io_binding=provider == "CUDAExecutionProvider")
        ran = list(self.model.providers)
        if ran and ran[0] != provider:
            ctx.notes.append(f"requested {provider} but the session runs on {ran[0]}")
        self.device = self.model.device.type  # optimum places inputs for its provider: cuda for CUDA/TensorRT
        self._info = {"provider": ran[0] if ran else provider, "session_providers": ran,
                      "artifact_dir": str(onnx_dir), "export_cached": export_cached,
                      "onnxruntime": onnxruntime.__version__}

    def _export(self, model, spec, ctx: LoadContext) -> tuple[Path, bool]:
        """The cached export for this model and precision (built in an isolated process on a miss)."""
        log_path = os.environ.get("ARENA_WORKER_LOG")
        task = IMAGE_TASK if model.task == "image" else TEXT_TASK
        target = "export_pipeline" if model.task == "image" else "export_text_model"
        fields = {"model": model.fingerprint, "task": task,
                  "dtype": "fp16" if spec.precision == "fp16" else "fp32", "versions": _versions()}
        device = "cuda" if spec.precision == "fp16" else "cpu"
        with ctx.stage("export", f"ONNX Runtime: exporting {model.model_name} to ONNX (once, then cached)"):
            onnx_dir, built = ctx.cache.get_or_build(
                "onnx", fields,
                lambda tmp: run_isolated(f"backends.onnxruntime_backend:{target}",
                                         model.model_dir, str(tmp), fields["dtype"], device,
                                         description="ONNX export", progress=ctx.progress, log_path=log_path)
                or {"source": model.model_dir, "model_name": model.model_name})
        if spec.precision == "int8":
            with ctx.stage("export", "ONNX Runtime: dynamic int8 quantization (once, then cached)"):
                onnx_dir, built_q = ctx.cache.get_or_build(
                    "onnx-int8", {"fp32": str(onnx_dir.name), "versions": _versions()},
                    lambda tmp: run_isolated("backends.onnxruntime_backend:quantize_text_model",
                                             str(onnx_dir), str(tmp), description="int8 quantization",
                                             progress=ctx.progress, log_path=log_path)
                    or {"source": str(onnx_dir)})
                built = built or built_q
        return onnx_dir, built
