"""Requests and results: the frozen data that flows between the UI, the core and the workers.

Everything here is plain data (no torch, no gradio) so it pickles across the worker pipe and
serialises to JSON for the API and the reports.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from arena.fields import RequestFields, request_field
from arena.preparing.catalog import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL, IMAGE_CATALOG
from arena.registry import DEFAULT_BACKENDS, backend_choices, backend_class, resolve_alias

# The prepared inputs live on the backends' side of the border (backends import nothing from arena): re-exported.
from backends.contract import PreparedImage as PreparedImage
from backends.contract import PreparedText as PreparedText

IMAGE_DEFAULTS = IMAGE_CATALOG[0]  # the default pipeline's suggested steps and guidance are the form's defaults
PROMPT_CAP = "The prompt's length is capped at {cap} characters on this public server (asked: {asked})."
# What the long reach costs (`TextRunRequest.reach`), measured by benchmarks/reach.py (docs/reach-benchmark.md).
REACH_COST = ("about +21 s at 1,024 positions, +97 s at 2,048 and +340 s at 4,096 for a PyTorch and an ONNX Runtime "
              "backend on 2 busy CPU cores (docs/reach-benchmark.md)")
SIDE_CAP = "Image sides are capped at {cap} px on this public server (asked: {asked} px)."


@dataclass(frozen=True, init=False, repr=False)
class BackendSpec:
    """One backend configuration the user picked: which runtime, and its option values.

    The options are the backend's own (its ``Options`` dataclass, see `backends.contract.option`), read as attributes
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


MAX_BACKENDS_PER_RUN = 32  # in any mode (public mode's own cap is smaller: `PublicLimits.max_backends`)


def parse_backends(value: Any = None) -> tuple:
    """Backends as specs, names, option dicts, a JSON list of those or comma-separated names. None (or a blank
    text) is the defaults (`arena.registry.DEFAULT_BACKENDS`); an empty list stays empty (the core then asks
    for one)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        value = DEFAULT_BACKENDS
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"The backends are not a JSON list: {exc}.") from None
        else:
            value = [t.strip() for t in text.split(",") if t.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError(f"The backends must be a list, not {type(value).__name__}.")
    if len(value) > MAX_BACKENDS_PER_RUN:  # before each is parsed: 50,000 of them took the app minutes to refuse
        raise ValueError(f"A run takes at most {MAX_BACKENDS_PER_RUN} backends (asked: {len(value):,}).")
    return tuple(BackendSpec.from_any(b) for b in value)


class _Request(RequestFields):
    """What text and image requests share: declared fields (`arena.fields`), JSON with each backend spec as a
    dict."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["backends"] = [b.to_dict() for b in self.backends]
        return data


@dataclass(frozen=True)
class TextRunRequest(_Request):
    """One text comparison: the same prompt, greedy, through every selected backend. Each field is declared once
    (`arena.fields.request_field`): the form, the API, the CLI, links and the public gate read it from here."""

    task: ClassVar[str] = "text"

    model: str = request_field(DEFAULT_TEXT_MODEL, kind="text", label="Model", blank_is_default=True,
                               help="a catalog key, a Hugging Face hub id, or a local directory")
    prompt: str = request_field("", kind="text", label="Prompt", public_cap="max_prompt_chars", required=True,
                                cap_text=PROMPT_CAP, help="the user's prompt (rendered with the model's prompt format)")
    backends: tuple[BackendSpec, ...] = request_field(
        kind="backends", label="Backends", default_factory=parse_backends, parser=parse_backends,
        help='names ("pytorch", "onnxruntime") or dicts of options, e.g. {"backend": "onnxruntime", '
             '"provider": "CPUExecutionProvider", "precision": "int8"}; default: PyTorch and ONNX Runtime')
    max_new_tokens: int = request_field(64, kind="int", label="Max new tokens", minimum=1, maximum=4096,
                                        form_maximum=512, step=1,
                                        public_cap="max_new_tokens", help="how many tokens each backend may generate")
    prompt_format: str = request_field("auto", kind="text", label="Prompt format", blank_is_default=True,
                                       help='"auto", "chat", "plain", "llama-2-chat" or "dolly"')
    ignore_eos: bool = request_field(False, kind="bool", label="Ignore EOS (always generate max new tokens)",
                                     group="timing", help="for benchmarking: every backend generates exactly "
                                                          "max_new_tokens")
    warmup: int = request_field(1, kind="int", label="Warm-up generations", minimum=0, form_maximum=10,
                                public_cap="max_warmup", group="timing",
                                help="untimed warm-up generations per backend")
    repeats: int = request_field(1, kind="int", label="Timed repeats", minimum=1, form_maximum=20,
                                 public_cap="max_repeats",
                                 group="timing", help="timed generations per backend; medians are reported")
    reference: str = request_field("auto", kind="text", label="Reference", blank_is_default=True,
                                   help='the backend the verdicts compare with: "auto" (PyTorch fp32), a name or an '
                                        "index")
    reach: int = request_field(0, kind="int", label="Long reach (positions; 0: off)", minimum=0, maximum=131_072,
                               form_maximum=8192, step=512, public_cap="max_reach",
                               help="teacher-force a long shipped text up to this many positions (cut to the "
                                    "model's context), full pass and its last 32 positions through each backend's "
                                    "KV cache: position and cache bugs past the fixed 512-position paragraph show. "
                                    f"Cost on the embedded model: {REACH_COST}")
    localize: str = request_field("auto", kind="text", choices=("auto", "all", "off"), label="Where did it break?",
                                  help='compare each layer\'s output with the reference\'s: "auto" for broken and '
                                       'drifting backends, "all" for every backend, or "off"')


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
        "stopped": result.stopped,
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
    # The visitor stopped the run while (or before) this backend ran: ``error`` says so, ``text`` keeps what it had
    # written until then; no verdict, and not a failure of the backend.
    stopped: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return _result_dict(self) | {"text": self.text, "token_ids": list(self.token_ids),
                                     "num_new_tokens": len(self.token_ids)}


@dataclass(frozen=True)
class _RunResult:
    """The whole comparison: request, shared input and one result per backend, in request order. Its JSON is
    complete here (verdicts, the reference's index and flags, image PSNR): the UI, the API, the reports and the
    scripts show it and never recompute it."""

    request: Any  # TextRunRequest | ImageRunRequest
    prepared: Any  # PreparedText | PreparedImage | None (None: the run stopped before its input was made)
    results: tuple = ()  # BackendTextResult | BackendImageResult, in request order
    error: str | None = None  # a problem before any backend ran (bad model id, prompt too long)
    environment: dict[str, Any] = field(default_factory=dict)
    # While a run is under way: the next backend's answer so far ({"backend", "label", "text", "tokens", "of"}),
    # and the phase after every backend has run ("judging"). Both empty in a finished run, except "stopped": the
    # visitor stopped it, what finished is kept and nothing was judged.
    streaming: dict[str, Any] | None = None
    phase: str = ""
    # What the machine did while each backend ran (`arena.running.load.between`), in the results' order.
    machine_load: tuple = ()
    kept_at: str = ""  # an example's result shown again: when this server ran it (`Arena.run_example`)

    def to_dict(self) -> dict[str, Any]:
        from arena.running.load import busy_sentence

        reference = _reference_of(self.request)
        results = self._results_dicts(reference)
        for result, load in zip(results, self.machine_load, strict=False):
            result["machine_load"] = load
        return {"request": self.request.to_dict(),
                "model": None if self.prepared is None else self._model_dict(self.prepared),
                **self._input_dict(self.prepared), "results": results,
                "reference_index": reference, "error": self.error, "environment": self.environment,
                "streaming": self.streaming, "phase": self.phase, "kept_at": self.kept_at,
                "busy_machine": busy_sentence({r["label"]: r.get("machine_load") for r in results})}

    def _model_dict(self, prepared) -> dict[str, Any]:
        return {"name": prepared.model_name, "source": prepared.source, "dir": prepared.model_dir}

    def _input_dict(self, prepared) -> dict[str, Any]:
        return {}

    def _results_dicts(self, reference: int | None) -> list[dict[str, Any]]:
        return _with_reference_flags([r.to_dict() for r in self.results], reference)


@dataclass(frozen=True)
class TextRunResult(_RunResult):
    """A text comparison (`TextRunRequest`, `PreparedText`, `BackendTextResult`s)."""

    def _model_dict(self, prepared: PreparedText) -> dict[str, Any]:
        return super()._model_dict(prepared) | {"context_length": prepared.context_length,
                                                "materialize_s": prepared.materialize_s,
                                                "parameters": prepared.parameters,
                                                "reach_positions": len(prepared.reach_token_ids),
                                                "reach_note": prepared.reach_note}

    def _input_dict(self, prepared: PreparedText | None) -> dict[str, Any]:
        return {"rendered_prompt": prepared.rendered_prompt if prepared else None,
                "prompt_token_ids": list(prepared.prompt_token_ids) if prepared else []}


def _reference_of(request: Any) -> int | None:
    from arena.judging.verdicts import reference_index

    try:
        return reference_index(request.reference, request.backends)
    except ValueError:
        return None


@dataclass(frozen=True)
class ImageRunRequest(_Request):
    """One image comparison: the same prompt, seed, latents, scheduler and steps through every backend. Each
    field is declared once (`arena.fields.request_field`), like the text request's."""

    task: ClassVar[str] = "image"

    def refuse_public(self, limits: Any) -> str | None:
        """The fields' caps, and the prompt and negative prompt together under the prompt's cap."""
        asked = len(self.prompt) + len(self.negative_prompt)
        if asked > limits.max_prompt_chars:
            return PROMPT_CAP.format(cap=f"{limits.max_prompt_chars:g}", asked=f"{asked:g}")
        return super().refuse_public(limits)

    model: str = request_field(DEFAULT_IMAGE_MODEL, kind="text", label="Pipeline", blank_is_default=True,
                               help="a catalog key, a diffusers hub id, or a local pipeline folder")
    prompt: str = request_field("", kind="text", label="Prompt", public_cap="max_prompt_chars", cap_text=PROMPT_CAP,
                                required=True, help="what to draw")
    backends: tuple[BackendSpec, ...] = request_field(
        kind="backends", label="Backends", default_factory=parse_backends, parser=parse_backends,
        help='names ("pytorch,onnxruntime"), or a JSON list of names or option dicts; default: PyTorch and '
             "ONNX Runtime")
    negative_prompt: str = request_field("", kind="text", label="Negative prompt", help="what not to draw")
    steps: int = request_field(IMAGE_DEFAULTS.steps, kind="int", label="Steps", minimum=1, maximum=200,
                               form_maximum=100, step=1,
                               public_cap="max_steps", help="denoising steps",
                               cap_text="Steps are capped at {cap} on this public server (asked: {asked}).")
    guidance_scale: float = request_field(IMAGE_DEFAULTS.guidance_scale, kind="float", label="Guidance scale",
                                          minimum=0.0, maximum=100.0, form_maximum=15.0, step=0.5,
                                          help="classifier-free guidance")
    seed: int = request_field(0, kind="int", label="Seed", minimum=0, maximum=2**63 - 1,
                              help="the seed of the initial latents")
    height: int | None = request_field(None, kind="size", label="Height (0: native)", minimum=8, maximum=2048,
                                       public_cap="max_image_side", cap_text=SIDE_CAP,
                                       help="pixels; 0 or empty: the model's native size")
    width: int | None = request_field(None, kind="size", label="Width (0: native)", minimum=8, maximum=2048,
                                      public_cap="max_image_side", cap_text=SIDE_CAP,
                                      help="pixels; 0 or empty: the model's native size")
    reference: str = request_field("auto", kind="text", label="Reference", blank_is_default=True,
                                   help='the backend the verdicts compare with: "auto" (PyTorch fp32), a name or an '
                                        "index")
    localize: str = request_field("auto", kind="text", choices=("auto", "all", "off"), label="Where did it break?",
                                  help='run the text encoder, UNet and VAE decoder on the reference\'s inputs and '
                                       'compare each output with the reference\'s: "auto" for broken backends, "all" '
                                       'for every backend, or "off"')


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
    # numpy (1, C, h, w): the latents the VAE decoded (the reference's feed the VAE when localizing); dropped
    # after judging
    latents: Any = field(default=None, compare=False, repr=False)
    stopped: bool = False  # as `BackendTextResult.stopped`

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return _result_dict(self) | {"image_shape": list(self.image.shape) if self.image is not None else None}


@dataclass(frozen=True)
class ImageRunResult(_RunResult):
    """An image comparison (`ImageRunRequest`, `PreparedImage`, `BackendImageResult`s)."""

    def _model_dict(self, prepared: PreparedImage) -> dict[str, Any]:
        return super()._model_dict(prepared) | {"height": prepared.height, "width": prepared.width,
                                                "scheduler": json.loads(prepared.scheduler),
                                                "notes": list(prepared.notes)}

    def _results_dicts(self, reference: int | None) -> list[dict[str, Any]]:
        return _image_results(self.results, reference)


def _with_reference_flags(results: list[dict[str, Any]], reference: int | None) -> list[dict[str, Any]]:
    """Each backend's dict says whether it is the run's reference (the one the verdicts compare with)."""
    for index, entry in enumerate(results):
        entry["is_reference"] = index == reference
    return results


def _image_results(results: tuple[BackendImageResult, ...], reference: int | None) -> list[dict[str, Any]]:
    """Each backend's dict with its PSNR against the reference image (computed here once, for the UI, the API,
    the reports and the scripts). Identical images have infinite PSNR; JSON has no infinity, so they report
    99.0 dB with ``identical_to_reference: true``."""
    from arena.judging.image_metrics import psnr

    images = [r.image for r in results]
    if reference is not None and (reference >= len(images) or images[reference] is None):
        reference = None
    data = _with_reference_flags([r.to_dict() for r in results], reference)
    for index, (entry, image) in enumerate(zip(data, images, strict=True)):
        entry["psnr_vs_reference_db"], entry["identical_to_reference"] = None, None
        if reference is None or image is None or index == reference or images[reference].shape != image.shape:
            continue
        value = psnr(images[reference], image)
        entry["psnr_vs_reference_db"] = 99.0 if value == float("inf") else round(value, 2)
        entry["identical_to_reference"] = value == float("inf")
    return data


# The request type of each task ("text", "image"): links, history and the CLI find a task's fields here.
REQUESTS: dict[str, type[TextRunRequest] | type[ImageRunRequest]] = {"text": TextRunRequest, "image": ImageRunRequest}
