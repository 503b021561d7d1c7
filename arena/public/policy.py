"""Public mode: the one gate every request passes (UI, API, CLI, /check) before any work or disk access.

A public deployment (a Hugging Face Space, or ``app.py --public``) is open to strangers, so:
- models are catalog entries or hub ids only (no server paths), and no backend option of a server-side kind
  (a "path" such as ``onnx_dir``/``engine_path``, a "url", a "secret_env": see `backends.contract.option`) may be set;
- work is capped (tokens, repeats, warm-ups, prompt length, image size and steps, backends per run, model size by
  parameter count read from the hub before any download, a whole-run time limit, the cache's total size);
- gated models are refused before a run starts when no Hugging Face token is configured;
- a "url" option (a model server to call) takes only the endpoints the operator configured
  (``ARENA_ENDPOINTS="name=http://host:port/v1,..."``), picked by name: a visitor never makes this server call an
  address of their choosing, nor sees the operator's; a "secret_env" option keeps its default.

Every refusal is one sentence. Off a Space (and without ``--public``) `Policy.local()` checks only gated models,
so nothing changes for a local user. Caps are operator settings: ``ARENA_<FIELD>`` environment variables (Space
variables) or ``app.py --limit field=value``. Pure stdlib at import time: safe in the UI process.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arena.tasks import task_of
from backends.contract import SERVER_SIDE_KINDS

# A hub id: "name" or "owner/name" of letters, digits, '-', '_', '.'; never a path ("..", leading "/", "~", ".").
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")  # whole string: `fullmatch`


@dataclass(frozen=True)
class PublicLimits:
    """What one visitor's run may ask for in public mode. Every field is an operator setting."""

    max_new_tokens: int = 256
    max_repeats: int = 3
    max_warmup: int = 2
    max_prompt_chars: int = 2000
    # The prompt as the model sees it, after the repository's chat template: capped apart from the visitor's text
    # (a template can render any size) and from the repository's own max_position_embeddings (it says anything).
    max_rendered_prompt_chars: int = 32_000
    max_prompt_tokens: int = 4096
    max_backends: int = 4
    max_steps: int = 50
    max_image_side: int = 768
    max_parameters: float = 1.5e9  # fp32 weights + an ONNX export of them must fit a 16 GB CPU Space
    max_cache_gb: float = 30.0  # exports, materialized models and hub downloads together; least recently used go
    run_time_limit_s: float = 300.0  # the whole run: preparation, every backend, judging, reloads and compiles
    max_extra_mb: float = 64.0  # a hub repository's files besides its weights (configs, tokenizers, texts)
    max_check_prompts: int = 5  # prompts one /check may take
    max_history_entry_kb: float = 256.0  # one kept run, as JSON (longer strings are cut to fit)
    max_history_session_mb: float = 4.0  # one visitor's kept runs together (the oldest go first)
    # Where-did-it-break runs a second session of the candidate (a copy of its graph with every layer's output
    # marked: for an export with its weights inline, a copy of them on disk) next to the first: models up to this.
    max_localize_parameters: float = 5e8
    # The long reach (teacher-forcing a long text): positions per run (a check's default of 4,096 is cut to it).
    # Its full pass holds positions x vocabulary logits in each backend's worker
    # (`arena.preparing.prepare.REACH_LOGITS_MAX_BYTES` caps that too), and it must fit `run_time_limit_s`.
    max_reach: int = 2048

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None,
                      overrides: Mapping[str, str] | None = None) -> PublicLimits:
        """Defaults, then ``ARENA_<FIELD>`` environment variables, then ``overrides`` ({field: value})."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in fields:
            if f"ARENA_{name.upper()}" in environ:
                values[name] = environ[f"ARENA_{name.upper()}"]
        for name, value in (overrides or {}).items():
            if name not in fields:
                raise ValueError(f"Unknown limit '{name}': choose one of {', '.join(fields)}.")
            values[name] = value
        converted = {}
        for name, value in values.items():
            kind = int if fields[name].type in ("int", int) else float
            try:
                converted[name] = kind(float(value)) if kind is int else kind(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"The limit {name} must be a number, not {value!r}.") from exc
            if converted[name] <= 0:
                raise ValueError(f"The limit {name} must be positive, not {value!r}.")
        return cls(**converted)


def parse_limit_overrides(items: list[str] | None) -> dict[str, str]:
    """``["max_new_tokens=128", ...]`` (the ``--limit`` flags) as a dict."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--limit takes name=value, not {item!r}.")
        out[name.strip()] = value.strip()
    return out


def human_count(value: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}".replace(".0", "")
    return f"{value:.0f}"


def hub_token_available() -> bool:
    """A Hugging Face token is configured (HF_TOKEN, or a `hf auth login` token file). Never returns the token."""
    from arena.public import secrets

    return secrets.hf_token() is not None


def hub_model_facts(model_id: str, token: str | bool | None = False) -> dict[str, Any]:
    """Parameter count and gating of a hub model from its metadata, before any download: a quick first look in
    the UI process. It trusts what the Hub says (headers a repository wrote), so the preparation worker checks
    again from the architecture itself (`arena.public.hub`) before any weight is fetched.

    The count is the safetensors header total when the Hub has it; otherwise it is estimated from the weight
    files' sizes at 2 bytes a parameter (an over-estimate for fp32 weights: the cap errs on the safe side).
    ``token``: False (anonymous) for a visitor's id; the operator's only for their own catalog entries.
    """
    from huggingface_hub import HfApi

    info = HfApi().model_info(model_id, files_metadata=True, token=token)
    parameters, how = None, ""
    if getattr(info, "safetensors", None) is not None and getattr(info.safetensors, "total", None):
        parameters, how = float(info.safetensors.total), "from its safetensors metadata"
    else:
        weights = [s.size or 0 for s in info.siblings or []
                   if s.rfilename.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf"))]
        if weights:
            parameters, how = sum(weights) / 2, f"estimated from {sum(weights) / 1e9:.1f} GB of weight files"
    return {"parameters": parameters, "how": how, "gated": bool(getattr(info, "gated", False))}


FACTS_TTL_S = 60.0
MAX_SHOWN_CHARS = 20_000
ENDPOINTS_VARIABLE = "ARENA_ENDPOINTS"  # "name=http://host:port/v1,...": the servers the operator offers


def configured_endpoints(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{name: base URL} of the model servers the operator configured (``ARENA_ENDPOINTS``), in their order. A
    "url" option takes a name in public mode; a backend resolves it with this (in its worker: the same
    environment)."""
    environ = os.environ if environ is None else environ
    out = {}
    for item in environ.get(ENDPOINTS_VARIABLE, "").split(","):
        name, sep, url = item.partition("=")
        if sep and name.strip() and url.strip():
            out[name.strip()] = url.strip()
    return out


class Policy:
    """The gate. ``public`` turns on path refusal and the caps; gated-model checks apply in every mode."""

    def __init__(self, public: bool = False, limits: PublicLimits | None = None,
                 hub_facts: Callable[[str], dict[str, Any]] = hub_model_facts,
                 token_available: Callable[[], bool] = hub_token_available):
        self.public = public
        self.limits = limits or PublicLimits()
        self._hub_facts = hub_facts
        self._token_available = token_available
        self._facts_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._trusted_paths: set[str] = set()

    @classmethod
    def local(cls) -> Policy:
        return cls(public=False)

    # --- the whole request ------------------------------------------------------------------------------
    def refuse_text(self, request) -> str | None:
        """One sentence saying why this text request may not run, or None."""
        return self._refuse_common(request, request.task)

    def refuse_check(self, request) -> str | None:
        """A check's own caps (`arena.judging.check.CheckRequest`: its fields declare them): how many prompts
        (each is a whole run) and how long, its tokens and steps, before any prompt runs. Its model and backends
        pass this gate with each prompt's run."""
        if not self.public:
            return None
        return request.refuse_public(self.limits)

    def refuse_image(self, request) -> str | None:
        """One sentence saying why this image request may not run, or None."""
        return self._refuse_common(request, request.task)

    def refuse_model(self, model: str, task: str) -> str | None:
        """Refuse server paths (public), gated models without a token, and models over the size cap (public)."""
        name = (model or "").strip()
        entry = task_of(task).find_model(name)
        if entry is None and self.public and not HUB_ID.fullmatch(name):
            return (f"'{name}' is not a catalog model or a Hugging Face hub id ('owner/name'): this public server "
                    "does not open paths on its disk.")
        if entry is not None:
            facts = {"parameters": entry.parameters, "how": "", "gated": entry.gated}
        elif not self.public:
            return None  # a local user's hub id or folder: resolved (and explained) by the preparer
        else:
            try:
                facts = self._cached_facts(name)
            except Exception as exc:  # noqa: BLE001 - unknown size: a public server does not gamble its memory
                return (f"The size of '{name}' cannot be read from the Hugging Face Hub ({type(exc).__name__}), "
                        "so this public server does not load it.")
        if facts["gated"] and self.public and entry is None:
            return (f"'{name}' is a gated model: this public server fetches visitors' models without any token, "
                    "so it cannot load gated ones (run it locally with `make run` after accepting its license).")
        if facts["gated"] and not self._token_available():
            return (f"'{name}' is a gated model: this server has no Hugging Face token (set HF_TOKEN, a Space "
                    "secret, after accepting the model's license on its Hub page).")
        if self.public:
            parameters = facts["parameters"]
            if parameters is None:
                return f"'{name}' has no weight files this server can size, so it does not load it."
            if parameters > self.limits.max_parameters:
                how = f" ({facts['how']})" if facts["how"] else ""
                return (f"'{name}' has {human_count(parameters)} parameters{how}; this public server takes models "
                        f"up to {human_count(self.limits.max_parameters)}.")
        return None

    def _cached_facts(self, model_id: str) -> dict[str, Any]:
        """The Hub's facts for a minute at most: a repository can change; the worker pins and re-checks anyway."""
        now = time.monotonic()
        stamp, facts = self._facts_cache.get(model_id, (0.0, None))
        if facts is None or now - stamp > FACTS_TTL_S:
            facts = self._hub_facts(model_id)
            self._facts_cache[model_id] = (now, facts)
            while len(self._facts_cache) > 1024:
                self._facts_cache.pop(next(iter(self._facts_cache)))
        return facts

    def _refuse_common(self, request, task: str) -> str | None:
        """The request's own caps (each field declares its `PublicLimits` cap: `arena.fields`), its backends, its
        model."""
        if self.public:
            problem = request.refuse_public(self.limits)
            if problem:
                return problem
            if len(request.backends) > self.limits.max_backends:
                return (f"A run takes up to {self.limits.max_backends} backends on this public server "
                        f"(asked: {len(request.backends)}).")
            for spec in request.backends:
                problem = self.refuse_spec(spec)
                if problem:
                    return problem
        return self.refuse_model(request.model, task)

    def refuse_spec(self, spec) -> str | None:
        """Options that reach outside the server's own work (the kinds in `SERVER_SIDE_KINDS`, read from the
        backend's options) in public mode: a path is refused; a URL only as the name of an operator-configured
        endpoint (`configured_endpoints`); a secret's variable only as its default."""
        if not self.public:
            return None
        from arena.registry import backend_class

        for info in backend_class(spec.backend).Options.fields_info():
            value = spec.get(info.name)
            what = info.title().removesuffix(" (optional)")
            if info.kind == "path" and value is not None and str(value) in self._trusted_paths:
                continue
            if info.kind == "url":
                problem = self._refuse_endpoint(what, info.name, "" if value is None else str(value).strip())
                if problem:
                    return problem
            elif info.kind in SERVER_SIDE_KINDS and value not in (None, "", info.default):
                reach = {"path": "is a path on the server",
                         "secret_env": "names a secret of this server"}.get(info.kind, "reaches outside this server")
                return f"{what} ({info.name}) {reach}, which this public server does not take from visitors."
        return None

    def trust_path(self, path: str) -> None:
        """A folder the server made itself (the broken-conversion demos' exports): accepted as a path option in
        public mode. Exactly these strings; any other path a visitor types is still refused."""
        self._trusted_paths.add(str(path))

    @staticmethod
    def _refuse_endpoint(what: str, name: str, value: str) -> str | None:
        """A "url" option in public mode: a configured endpoint's name, or empty (the only one, if one)."""
        endpoints = configured_endpoints()
        if not value:
            if len(endpoints) > 1:
                return (f"{what} ({name}) names one of the endpoints this public server offers: "
                        f"{', '.join(endpoints)}.")
            return None  # the only endpoint, or none (the backend says what it needs)
        if value in endpoints:
            return None
        if not endpoints:
            return (f"{what} ({name}) is an address this server would call, and its operator configured no "
                    "endpoint for visitors.")
        return (f"{what} ({name}) takes only the endpoints this public server's operator configured, by name "
                f"({', '.join(endpoints)}), never an address or a name a visitor makes up.")

    def redact(self, data: Any, roots: tuple[str, ...] = ()) -> Any:
        """What anyone gets back: no secret (every mode: `arena.public.secrets.scrub_data`); in public mode also no
        server paths (model and artifact folders, paths inside messages), no log tails and no string longer than
        `MAX_SHOWN_CHARS` (a visitor's 20 MB prompt is not echoed back). ``roots``: folders to hide."""
        from arena.public.secrets import scrub_data

        data = scrub_data(data)
        if not self.public:
            return data
        hidden = sorted({r for r in (*roots, str(Path.home())) if r and len(r) > 1}, key=len, reverse=True)

        def clean(value: Any, key: str = "") -> Any:
            if key in ("dir", "artifact_dir", "model_dir", "cache_dir"):
                return None
            if key == "log_tail":
                return ""
            if isinstance(value, dict):
                return {k: clean(v, k) for k, v in value.items()}
            if isinstance(value, list | tuple):  # tuples too: LoadInfo.notes ("user export <folder>")
                return [clean(v) for v in value]
            if isinstance(value, str):
                if len(value) > MAX_SHOWN_CHARS:
                    value = value[:MAX_SHOWN_CHARS] + f"… ({len(value):,} characters)"
                for root in hidden:
                    value = value.replace(root, "…")
            return value

        return clean(data)

    def describe(self) -> str:
        """For the UI: what a visitor may ask for (Markdown), or '' off public mode."""
        if not self.public:
            return ""
        limits = self.limits
        return (f"**Public server.** Catalog models and Hugging Face hub ids up to "
                f"{human_count(limits.max_parameters)} parameters; up to {limits.max_new_tokens} new tokens, "
                f"{limits.max_repeats} timed repeats, {limits.max_steps} image steps and {limits.max_image_side} px; "
                f"{limits.max_backends} backends and {limits.run_time_limit_s:g} s per run. Your own exports and "
                "engines need a local install (`make run`)."
                + (f" Model servers: {', '.join(configured_endpoints())}." if configured_endpoints() else ""))
