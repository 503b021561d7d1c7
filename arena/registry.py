"""Backend registry: registering a backend is one line here. Importing a backend module is cheap (no torch)."""

from __future__ import annotations

import importlib

from backends.base import Backend

TEXT_BACKENDS: dict[str, str] = {
    "pytorch": "backends.torch_backend:PyTorchBackend",
    "onnxruntime": "backends.onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "backends.tensorrt_backend:TensorRTBackend",
}


def backend_class(name_or_target: str) -> type[Backend]:
    """The backend class registered under a name, or named directly as "module:Class"."""
    target = TEXT_BACKENDS.get(name_or_target, name_or_target)
    if ":" not in target:
        raise ValueError(f"Unknown backend {name_or_target!r}; registered: {', '.join(TEXT_BACKENDS)}.")
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
