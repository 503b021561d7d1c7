"""Requests and results: the frozen data that flows between the UI, the core and the workers.

Everything here is plain data (no torch, no gradio) so it pickles across the worker pipe and
serialises to JSON for the API and the reports.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from arena.registry import backend_choices, backend_class, resolve_alias


@dataclass(frozen=True, init=False, repr=False)
class BackendSpec:
    """One backend configuration the user picked: which runtime, and its option values.

    The options are the backend's own (its ``Options`` dataclass, see `backends.base.option`), read as attributes
    (``spec.precision``, ``spec.onnx_dir``). Frozen, hashable and picklable: it crosses the worker pipe and keys
    caches and dicts.
    """

    backend: str  # a registered name: "pytorch" | "onnxruntime" | "tensorrt" | ...
    values: tuple[tuple[str, Any], ...]  # every option of that backend, in declaration order, defaults filled

    def __init__(self, backend: str, **options: Any) -> None:
        """``BackendSpec("onnxruntime", provider="CPUExecutionProvider")``: defaults for the options not given; an
        option the backend does not have is a ValueError that lists the ones it has."""
        name = resolve_alias(backend)
        cls = backend_class(name)
        object.__setattr__(self, "backend", name)
        object.__setattr__(self, "values", tuple(cls.Options.complete(options, cls.title).items()))

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):  # dunder lookups (pickle's __setstate__) must not reach the values
            for key, value in self.__dict__.get("values", ()):
                if key == name:
                    return value
        raise AttributeError(f"{self.__dict__.get('backend', 'This')} backend has no option {name!r}")

    def __repr__(self) -> str:
        return f"BackendSpec({self.backend!r}{''.join(f', {k}={v!r}' for k, v in self.values)})"

    @property
    def options(self) -> dict[str, Any]:
        """The option values by name."""
        return dict(self.values)

    def get(self, name: str, default: Any = None) -> Any:
        """One option's value, or ``default`` when this backend has no such option."""
        return dict(self.values).get(name, default)

    def replace(self, **options: Any) -> BackendSpec:
        """The same backend with some options changed."""
        return BackendSpec(self.backend, **(self.options | options))

    @property
    def label(self) -> str:
        return backend_class(self.backend).label(self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, **self.options, "label": self.label}

    @classmethod
    def from_any(cls, value: str | dict[str, Any] | BackendSpec) -> BackendSpec:
        """Build from a name ("onnxruntime"), a dict of options, or a spec (API and CLI convenience).

        String values are parsed by the option's type ("true" for a flag); ``None`` means "the default", and so
        does an empty text field. "label" (what `to_dict` adds) is ignored, so a result's options read back.
        """
        if isinstance(value, BackendSpec):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict):
            if value.get("backend") in (None, ""):
                raise ValueError(f"Each backend needs a 'backend' field: {backend_choices()}.")
            options = {k: v for k, v in value.items() if k not in ("backend", "label") and v is not None}
            return cls(value["backend"], **options)
        raise ValueError(f"Cannot read a backend from {value!r}.")


class _Request:
    """What text and image requests share: JSON with each backend spec as a dict."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["backends"] = [b.to_dict() for b in self.backends]
        return data


@dataclass(frozen=True)
class TextRunRequest(_Request):
    """One text comparison: the same prompt, greedy, through every selected backend."""

    model: str  # catalog key, hub id or local directory
    prompt: str
    backends: tuple[BackendSpec, ...]
    max_new_tokens: int = 64
    prompt_format: str = "auto"  # "auto" | "chat" | "plain" | a catalog format name
    ignore_eos: bool = False  # True: every backend generates exactly max_new_tokens (benchmarking)
    warmup: int = 1  # untimed short generations before timing
    repeats: int = 1  # timed generations; the median is reported
    reference: str = "auto"  # the backend the others are judged against: "auto" (PyTorch fp32), a name or index


@dataclass(frozen=True)
class PreparedText:
    """The shared input, made once by the preparation worker and given to every backend."""

    model_dir: str  # resolved local directory holding config, tokenizer and weights
    model_name: str  # what to show (catalog name or the id the user typed)
    source: str  # "embedded", "hub" or "local"
    rendered_prompt: str
    prompt_token_ids: tuple[int, ...]
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    context_length: int | None
    fingerprint: str  # identifies the weights for cache keys
    materialize_s: float = 0.0
    task: str = "text"
    unk_token_id: int | None = None
    user_prompt: str = ""  # the prompt as typed (a chat server applies its own template to it)
    prompt_format: str = ""  # the format it was rendered in ("chat", "plain", ...)
    quality_token_ids: tuple[int, ...] = ()  # the fixed paragraph (assets/quality-paragraph.txt), tokenized once
    parameters: int | None = None  # the model's parameter count (from its weight files' headers), if known


@dataclass(frozen=True)
class TextTimings:
    """What the core measured in the worker around the backend (never the backend itself)."""

    ttft_s: float  # time to first token: prefill + first decode step
    total_s: float
    tokens_per_s: float  # new tokens / total time
    decode_tokens_per_s: float  # (new tokens - 1) / (total - ttft)
    token_times_s: tuple[float, ...] = ()  # time of each new token since the start
    repeats: int = 1
    total_s_all: tuple[float, ...] = ()  # every timed repeat, for spread

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LoadInfo:
    """How the model got into the backend: conversion and load measured apart."""

    export_s: float = 0.0
    export_cached: bool | None = None  # None: this backend does not export
    load_s: float = 0.0
    engine_build_s: float = 0.0  # TensorRT engines built for this run (apart from the ONNX export)
    compile_s: float = 0.0  # torch.compile's first (warm-up) generation, apart from the load
    provider: str | None = None  # the execution provider / device that actually runs the model
    artifact_dir: str | None = None
    memory_mb: float | None = None  # worker resident memory after loading
    gpu_memory_mb: float | None = None  # GPU memory in use on the device after loading (CUDA runs only)
    threads: int | None = None  # CPU threads the runtime got (torch intra-op; ONNX Runtime intra_op_num_threads)
    precision: str | None = None  # what the loaded graph really is (a user's export read from its operators)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _result_dict(result: Any) -> dict[str, Any]:
    """The fields every backend result shares in the JSON the API returns."""
    load = result.load
    return {
        "backend": result.spec.backend,
        "label": result.spec.label,
        "options": result.spec.to_dict(),
        "timings": result.timings.to_dict() if result.timings else None,
        "load": load.to_dict() if load else None,
        "provider": load.provider if load else None,
        "export_cached": load.export_cached if load else None,
        "error": result.error,
        "log_tail": result.log_tail,
        "verdict": result.verdict.to_dict() if result.verdict is not None else None,
    }


@dataclass(frozen=True)
class BackendTextResult:
    """One backend's outcome. An error is a value here, never an exception through the UI."""

    spec: BackendSpec
    text: str = ""
    token_ids: tuple[int, ...] = ()
    timings: TextTimings | None = None
    load: LoadInfo | None = None
    error: str | None = None
    log_tail: str = ""
    verdict: Any = None  # arena.judging.verdicts.Verdict, set by the core once every backend has run
    first_logits: Any = field(default=None, compare=False, repr=False)  # numpy (vocab,); dropped after judging

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return _result_dict(self) | {"text": self.text, "token_ids": list(self.token_ids),
                                     "num_new_tokens": len(self.token_ids)}


@dataclass(frozen=True)
class TextRunResult:
    """The whole comparison: request, shared input and one result per backend, in request order."""

    request: TextRunRequest
    prepared: PreparedText | None
    results: tuple[BackendTextResult, ...] = ()
    error: str | None = None  # a problem before any backend ran (bad model id, prompt too long)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        prepared = self.prepared
        return {
            "request": self.request.to_dict(),
            "model": None if prepared is None else {
                "name": prepared.model_name, "source": prepared.source, "dir": prepared.model_dir,
                "context_length": prepared.context_length, "materialize_s": prepared.materialize_s,
                "parameters": prepared.parameters,
            },
            "rendered_prompt": prepared.rendered_prompt if prepared else None,
            "prompt_token_ids": list(prepared.prompt_token_ids) if prepared else [],
            "results": [r.to_dict() for r in self.results],
            "reference_index": _reference_of(self.request),
            "error": self.error,
            "environment": self.environment,
        }


def _reference_of(request: Any) -> int | None:
    from arena.judging.verdicts import reference_index

    try:
        return reference_index(request.reference, request.backends)
    except ValueError:
        return None


@dataclass(frozen=True)
class ImageRunRequest(_Request):
    """One image comparison: the same prompt, seed, latents, scheduler and steps through every backend."""

    model: str
    prompt: str
    backends: tuple[BackendSpec, ...]
    negative_prompt: str = ""
    steps: int = 20
    guidance_scale: float = 4.0
    seed: int = 0
    height: int | None = None  # None: the model's native size
    width: int | None = None
    reference: str = "auto"  # the backend the others are judged against: "auto" (PyTorch fp32), a name or index


@dataclass(frozen=True)
class PreparedImage:
    """The shared input of an image run: the resolved pipeline folder and the initial latents made once."""

    model_dir: str
    model_name: str
    source: str
    fingerprint: str
    height: int
    width: int
    latents: Any  # numpy float32 (1, C, H/f, W/f): standard normal noise from the seed, before init_noise_sigma
    scheduler: str  # the scheduler config (JSON, with "_class_name") every backend uses, overrides applied
    notes: tuple[str, ...] = ()
    materialize_s: float = 0.0
    task: str = "image"


@dataclass(frozen=True)
class ImageTimings:
    """Where the time of one image went, measured by the host around the backend's phase marks."""

    total_s: float
    text_encoder_s: float
    unet_s: float
    vae_s: float
    step_times_s: tuple[float, ...] = ()  # duration of each denoising step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BackendImageResult:
    """One backend's image (uint8 HxWx3 numpy array) or its error."""

    spec: BackendSpec
    image: Any = None
    timings: ImageTimings | None = None
    load: LoadInfo | None = None
    error: str | None = None
    log_tail: str = ""
    verdict: Any = None  # arena.judging.verdicts.Verdict, set by the core once every backend has run

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return _result_dict(self) | {"image_shape": list(self.image.shape) if self.image is not None else None}


@dataclass(frozen=True)
class ImageRunResult:
    request: ImageRunRequest
    prepared: PreparedImage | None
    results: tuple[BackendImageResult, ...] = ()
    error: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        prepared = self.prepared
        return {
            "request": self.request.to_dict(),
            "model": None if prepared is None else {
                "name": prepared.model_name, "source": prepared.source, "dir": prepared.model_dir,
                "height": prepared.height, "width": prepared.width, "scheduler": json.loads(prepared.scheduler),
                "notes": list(prepared.notes)},
            "results": [r.to_dict() for r in self.results],
            "reference_index": _reference_of(self.request),
            "error": self.error,
            "environment": self.environment,
        }
