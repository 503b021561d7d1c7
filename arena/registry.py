"""Backend registry: the one place with a line per backend. Importing a backend module is cheap (no torch).

Everything else about a backend (aliases, title, options, availability, label, environment facts, how its
precisions are judged, whether it can be the reference, its chart colour) is read from its class, so adding a
backend is its module (or package) plus one line in `BACKENDS` (and a test class taking the contract, in
tests/test_backend_contract.py or the backend's own test file, which a meta-test asks for). Outside this file no
module of arena/ or ui/ names a backend (tests/test_layout.py).
"""

from __future__ import annotations

import importlib
from functools import cache

from backends.contract import PRECISION_CLASSES, Backend

BACKENDS: dict[str, str] = {
    "pytorch": "backends.torch_backend:PyTorchBackend",
    "onnxruntime": "backends.onnxruntime.backend:OnnxRuntimeBackend",
    "tensorrt": "backends.tensorrt_backend:TensorRTBackend",
    "openai": "backends.openai_backend:OpenAIBackend",
    "llamacpp": "backends.llamacpp_backend:LlamaCppBackend",
    "onnxruntime-genai": "backends.onnxruntime_genai.backend:OnnxRuntimeGenAIBackend",
}

# What a run compares when it names no backends (the form's ticked boxes, the API's, the CLI's and a link's
# default): the reference and the export most people check against it.
DEFAULT_BACKENDS: tuple[str, ...] = ("pytorch", "onnxruntime")

# "See a broken conversion" (arena.preparing.demos): the backend whose export the server breaks on purpose and runs
# from its folder (its "onnx_dir" option) next to the reference.
DEMO_EXPORT_BACKEND = "onnxruntime"

# Backends added at run time by `register` (a test's deliberately broken backend, a plugin); kept apart from
# BACKENDS so the UI and the contract meta-test see only the project's own.
_EXTRA: dict[str, str] = {}


@cache
def _load(target: str) -> type[Backend]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def backend_class(name_or_target: str) -> type[Backend]:
    """The backend class registered under a name (or an alias), or named directly as "module:Class"."""
    if ":" in name_or_target:
        return _load(name_or_target)
    name = resolve_alias(name_or_target)
    return _load(BACKENDS.get(name) or _EXTRA[name])


def all_backends() -> dict[str, type[Backend]]:
    """The project's backends by name, in registry order."""
    return {name: _load(target) for name, target in BACKENDS.items()}


def register(name: str, target: str) -> None:
    """Make ``target`` ("module:Class") known under ``name`` in this process (extra backends of an `Arena`)."""
    if BACKENDS.get(name, target) != target:
        raise ValueError(f"'{name}' is already the registered backend {BACKENDS[name]}.")
    if name not in BACKENDS:
        _EXTRA[name] = target


def resolve_alias(name: str) -> str:
    """The registered name for ``name`` or one of the aliases its class declares ("ORT" -> "onnxruntime")."""
    key = str(name).strip().lower()
    if key in BACKENDS or key in _EXTRA:
        return key
    for registered, cls in all_backends().items():
        if key in cls.aliases:
            return registered
    raise ValueError(f"Unknown backend {name!r}: choose {backend_choices()}.")


def backend_choices() -> str:
    """"'pytorch', 'onnxruntime' or 'tensorrt'": the registered names, for sentences."""
    names = [f"'{n}'" for n in BACKENDS]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def default_reference() -> str:
    """The backend a check judges against when none is named: the first registered one whose default
    configuration can be a run's reference (`Backend.can_be_reference`: PyTorch fp32)."""
    for name, cls in all_backends().items():
        if cls.can_be_reference({info.name: info.default for info in cls.Options.fields_info()}):
            return name
    raise LookupError("No registered backend can be the reference in its default configuration.")


def tolerance_class(precision: str, backend: str | None = None) -> str:
    """The core's precision class (`backends.contract.PRECISION_CLASSES`) a precision name is judged by: as
    ``backend``'s class maps it (`Backend.tolerance_class`); with no backend named, a class itself, else as the
    first registered backend that maps the name to another class than fp32 (a GGUF type, ONNX Runtime's
    int8-dynamic); a name no backend knows: fp32, the strictest."""
    if backend is not None:
        return backend_class(backend).tolerance_class(precision)
    if precision in PRECISION_CLASSES:
        return precision
    found = (cls.tolerance_class(precision) for cls in all_backends().values())
    return next((klass for klass in found if klass != "fp32"), "fp32")
