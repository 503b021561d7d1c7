"""The cached ONNX export (optimum): a conversion step used by the ONNX Runtime and TensorRT backends alike (its
quantizations are in `backends.conversion.onnx_quantize`). The heavy work runs in an isolated process
(``ctx.run_isolated``); the results are cache entries built in a temporary folder and renamed into place.

optimum's own validation (running the export beside the model on random inputs) is off: the arena's judge compares
every export with the reference on the real prompt, far more strictly, and shows a wrong export as a verdict where
optimum would raise; it also spared ~2 s and a second copy of the model in memory."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from backends.base import LoadContext

TEXT_TASK = "text-generation-with-past"
IMAGE_TASK = "text-to-image"


def export_text_model(model_dir: str, output_dir: str, dtype: str, device: str) -> None:
    """Export a causal LM with KV cache to ``output_dir`` (runs in an isolated process)."""
    from optimum.exporters.onnx import main_export

    main_export(model_dir, output=output_dir, task=TEXT_TASK, device=device,
                dtype=None if dtype == "fp32" else dtype, do_validation=False)


def export_pipeline(model_dir: str, output_dir: str, dtype: str, device: str) -> None:
    """Export a Stable Diffusion pipeline (text encoder, UNet, VAE encoder/decoder) to ``output_dir``."""
    from optimum.exporters.onnx import main_export

    main_export(model_dir, output=output_dir, task=IMAGE_TASK, device=device,
                dtype=None if dtype == "fp32" else dtype, do_validation=False)


def export_versions() -> dict[str, str | None]:
    out = {}
    for dist in ("optimum-onnx", "optimum", "transformers", "torch", "onnx", "onnxruntime", "onnxruntime-gpu"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def cached_export(model: Any, dtype: str, ctx: LoadContext) -> tuple[Path, bool]:
    """The cached ONNX export of a prepared model at ``dtype`` ("fp32" on CPU, "fp16" on CUDA), built in an
    isolated process on a miss; returns ``(folder, built_now)``. Shared by ONNX Runtime and TensorRT."""
    task = IMAGE_TASK if model.task == "image" else TEXT_TASK
    target = "export_pipeline" if model.task == "image" else "export_text_model"
    fields = {"model": model.fingerprint, "task": task, "dtype": dtype, "versions": export_versions()}
    device = "cuda" if dtype == "fp16" else "cpu"
    with ctx.stage("export", f"Exporting {model.model_name} to ONNX ({dtype}; once, then cached)"):
        return ctx.cache.get_or_build(
            "onnx", fields,
            lambda tmp: ctx.run_isolated(f"{__name__}:{target}", model.model_dir, str(tmp), dtype, device,
                                         description="ONNX export")
            or {"source": model.model_dir, "model_name": model.model_name})
