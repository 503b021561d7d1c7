"""The cached ONNX export (optimum) and its int8 quantization: conversion steps used by the ONNX Runtime and
TensorRT backends alike. The heavy work runs in an isolated process (``ctx.run_isolated``); the results are cache
entries built in a temporary folder and renamed into place."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path
from typing import Any

from backends.base import LoadContext

TEXT_TASK = "text-generation-with-past"
IMAGE_TASK = "text-to-image"


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


def cached_int8(onnx_dir: Path, ctx: LoadContext) -> tuple[Path, bool]:
    """Dynamic int8 quantization of a cached fp32 export (for the CPU provider), built once, then cached."""
    with ctx.stage("export", "ONNX Runtime: dynamic int8 quantization (once, then cached)"):
        return ctx.cache.get_or_build(
            "onnx-int8", {"fp32": str(onnx_dir.name), "versions": export_versions()},
            lambda tmp: ctx.run_isolated(f"{__name__}:quantize_text_model", str(onnx_dir), str(tmp),
                                         description="int8 quantization")
            or {"source": str(onnx_dir)})
