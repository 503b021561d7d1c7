"""ZeroGPU mode: the arena on a Hugging Face Space whose hardware is ZeroGPU.

ZeroGPU lends a GPU only while a function decorated with ``@spaces.GPU`` runs, and only to a process the
``spaces`` package forks from the app's main process for that call (read from spaces 0.51.3:
``spaces/zero/wrappers.py`` forks with ``multiprocessing.get_context('fork')``, registers the forked pid with the
device API, sets ``CUDA_VISIBLE_DEVICES`` there and runs the function). Outside such a call no process of the Space
holds a GPU. Hence, on ZeroGPU:

- CPU backends run in their long-lived worker processes as everywhere (PyTorch on CPU, ONNX Runtime's CPU provider,
  llama.cpp, model servers).
- PyTorch on CUDA runs through one decorated function (`gpu_call`): each call the core would make on the
  ``pytorch-cuda`` worker (load and generate, score, layer outputs) is made instead inside ``@spaces.GPU``, with a
  duration estimated from the request (`estimate_duration`). The forked process loads the backend there and
  keeps it while ``spaces`` keeps that process for the next call. No progress is streamed from inside the call,
  and Stop takes effect when the call returns (the GPU call itself cannot be interrupted from here).
- GPU-only choices of every other backend (ONNX Runtime's CUDA and TensorRT providers and its fp16 exports, a
  TensorRT engine) are unavailable with the reason: they need a CUDA device held by their worker process for the
  whole session (sessions and engines are built once and reused), which ZeroGPU never lends.

The mode switches on by itself where the ``spaces`` package would: ``SPACES_ZERO_GPU`` true (``spaces/config.py``).
Nothing here imports ``spaces`` or torch unless that is so: off ZeroGPU the UI process stays free of both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# spaces/config.py: boolean(value) is ``value.lower() in ("1", "t", "true")``.
TRUE_VALUES = ("1", "t", "true")
# The per-call duration the arena asks for at most. ZeroGPU's per-tier maximum is not published (the client only
# says "larger than the maximum allowed"); 300 s was refused on a public Space in January 2025. Override with
# ARENA_ZEROGPU_MAX_DURATION_S where the Space's owner knows better.
DEFAULT_MAX_DURATION_S = 120
MIN_DURATION_S = 15  # forking, CUDA start-up and moving a small model cost seconds before any token
DEFAULT_SCHEDULE_S = 60  # what @spaces.GPU asks for without a duration (spaces/zero/client.py)
UNKNOWN_PARAMETERS = 1.5e9  # a model of unknown size: the public size cap's default
# The option value that asks a backend for its GPU. A backend is routed through @spaces.GPU when it has this option
# with this GPU-only value and its runtime reports its CUDA build (`Backend.machine_facts`'s "cuda"): PyTorch, the one
# runtime ZeroGPU supports. The core names no backend (tests/test_layout.py): these rules read what backends declare.
ROUTED_OPTION, ROUTED_VALUE = "device", "cuda"
ELSEWHERE_REASON = ("ZeroGPU lends its GPU only inside a @spaces.GPU call, to a process forked from the app for "
                    "that call, and supports PyTorch alone; {title} runs in its own long-lived worker process, "
                    "which never holds a GPU there (its sessions are built once and reused across runs).")
TORCH_CUDA_INSTALL = "use requirements-zerogpu.txt as the Space's requirements.txt (torch 2.13.0, PyPI's CUDA build)"


def active(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs on ZeroGPU hardware: the variable the spaces package itself reads."""
    value = (os.environ if environ is None else environ).get("SPACES_ZERO_GPU")
    return value is not None and value.lower() in TRUE_VALUES


def max_duration_s(environ: Mapping[str, str] | None = None) -> int:
    raw = (os.environ if environ is None else environ).get("ARENA_ZEROGPU_MAX_DURATION_S", "")
    try:
        return max(MIN_DURATION_S, int(float(raw))) if raw.strip() else DEFAULT_MAX_DURATION_S
    except ValueError:
        return DEFAULT_MAX_DURATION_S


def _spaces_dir() -> Path | None:
    """The installed spaces package's folder, found without importing it (its import patches torch on ZeroGPU)."""
    try:
        spec = importlib.util.find_spec("spaces")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def facts(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What the Environment tab and the availability rules need (cheap; no import of spaces or torch).

    "gpus": the GPU models ZeroGPU may lend, from the spaces package's own table (spaces/zero/configs.json), with
    their compute capability: the device a decorated call gets is one of them (or a share of one)."""
    environ = os.environ if environ is None else environ
    import importlib.metadata

    try:
        version = importlib.metadata.version("spaces")
    except importlib.metadata.PackageNotFoundError:
        version = None
    gpus: list[dict[str, Any]] = []
    folder = _spaces_dir()
    if folder is not None:
        try:
            table = json.loads((folder / "zero" / "configs.json").read_text())
            gpus = [{"name": c["model"], "capability": f"{c['sm_major']}.{c['sm_minor']}",
                     "memory_gb": round(c["memory"] / 2**30, 1)} for c in table]
        except (OSError, ValueError, KeyError, TypeError):
            gpus = []
    return {"active": active(environ), "spaces": version, "device_api": bool(environ.get("SPACES_ZERO_DEVICE_API_URL")),
            "gpus": gpus, "max_duration_s": max_duration_s(environ)}


def _zero(env: Mapping[str, Any]) -> dict[str, Any]:
    return env.get("zerogpu") or facts()


# --- which configurations run where ---------------------------------------------------------------------------
def routed(cls: Any, values: Mapping[str, Any], env: Mapping[str, Any] | None = None) -> bool:
    """Whether this configuration runs through the decorated path (ZeroGPU on, a PyTorch backend on CUDA)."""
    env = env or {}
    return bool(_zero(env).get("active")) and _is_routable(cls, env) and values.get(ROUTED_OPTION) == ROUTED_VALUE


def _is_routable(cls: Any, env: Mapping[str, Any]) -> bool:
    return "cuda" in cls.machine_facts(env) and any(
        info.name == ROUTED_OPTION and ROUTED_VALUE in info.gpu_only_values for info in cls.Options.fields_info())


def _runtime_key(env: Mapping[str, Any]) -> str | None:
    """The probe's key of the runtime facts that say a CUDA build and whether CUDA is available (the routed
    backend's runtime; read by shape, not by name)."""
    return next((k for k, v in env.items() if isinstance(v, Mapping) and "cuda_build" in v
                 and "cuda_available" in v), None)


def decorated_path(env: Mapping[str, Any]) -> Any:
    """Whether PyTorch on CUDA can run through @spaces.GPU here (an `Availability`)."""
    from backends.contract import AVAILABLE, Availability

    zero = _zero(env)
    key = _runtime_key(env)
    torch = dict(env.get(key) or {}) if key else {}
    if not zero.get("spaces"):
        return Availability(False, "On ZeroGPU the GPU is lent only inside functions decorated with @spaces.GPU, and "
                                   "the spaces package is not installed (a ZeroGPU Space's build installs it).",
                            "pip install spaces")
    if not torch.get("installed"):
        return Availability(False, f"PyTorch cannot be imported ({torch.get('error', 'not installed')}).",
                            TORCH_CUDA_INSTALL)
    if not torch.get("cuda_build"):
        return Availability(False, f"This PyTorch ({torch.get('version', '?')}) is a CPU-only build: a @spaces.GPU "
                                   "call would get the GPU, but this build cannot use it.", TORCH_CUDA_INSTALL)
    if _install_error:
        return Availability(False, f"The @spaces.GPU path could not be set up: {_install_error}")
    return AVAILABLE


def restrict(cls: Any, info: dict[str, Any], env: Mapping[str, Any]) -> dict[str, Any]:
    """``info`` ({"availability", "options", ...} from the core's `backend_options`) as it holds on ZeroGPU; the
    same dict off ZeroGPU. The routed backend's CUDA choice (and its GPU-only values) follow the decorated path;
    every other backend's GPU-only values, and CUDA-only runtimes entirely, are unavailable with the reason."""
    if not _zero(env).get("active"):
        return info
    from backends.contract import Availability, OptionChoice

    info = dict(info)
    gpu_only = {i.name: set(i.gpu_only_values) for i in cls.Options.fields_info()}
    if _is_routable(cls, env):
        path = decorated_path(env)
        options = {}
        for option, choices in info["options"].items():
            options[option] = [
                OptionChoice(c.value, f"{c.label} (ZeroGPU, per call)" if option == ROUTED_OPTION else c.label, path)
                if c.value in gpu_only.get(option, ()) else c for c in choices]
        info["options"] = options
        return info
    elsewhere = Availability(False, ELSEWHERE_REASON.format(title=cls.title))
    info["options"] = {option: [OptionChoice(c.value, c.label, elsewhere) if c.value in gpu_only.get(option, ())
                                else c for c in choices] for option, choices in info["options"].items()}
    return info


def gpu_env(env: Mapping[str, Any]) -> dict[str, Any]:
    """The probe's facts as a decorated call sees them: torch's CUDA available, on a GPU of ZeroGPU's table (bf16
    when every model there has compute capability 8.0 or newer). For checking a routed configuration only."""
    zero = _zero(env)
    key = _runtime_key(env)
    if key is None:
        return dict(env)
    facts = dict(env[key])
    gpus = list(zero.get("gpus") or [])
    facts["cuda_available"] = True
    facts["devices"] = gpus
    facts["bf16_cuda"] = bool(gpus) and all(float(g["capability"]) >= 8.0 for g in gpus)
    return {**env, key: facts}


def check_spec(cls: Any, spec: Any, env: Mapping[str, Any], task: str | None = None) -> str | None:
    """`Backend.check_spec` as it holds here: unchanged off ZeroGPU; on ZeroGPU, the `restrict`ed availability
    first, then the backend's own checks (against `gpu_env` for a routed configuration)."""
    if not _zero(env).get("active"):
        return cls.check_spec(spec, env, task)
    info = restrict(cls, {"availability": cls.availability(env), "options": cls.options(env)}, env)
    whole = info["availability"]
    if not whole.ok:
        return f"{cls.title} is not available here: {whole.sentence()}"
    for option, choices in info["options"].items():
        value = spec.options.get(option) if hasattr(spec, "options") else getattr(spec, option, None)
        match = next((c for c in choices if c.value == value), None)
        if match is not None and not match.availability.ok:
            return f"{cls.title} {option} '{value}' cannot run here: {match.availability.sentence()}"
    if _is_routable(cls, env) and decorated_path(env).ok:  # its GPU is the one a decorated call gets
        return cls.check_spec(spec, gpu_env(env), task)
    return cls.check_spec(spec, env, task)


# --- the duration a call asks for ----------------------------------------------------------------------------
def estimate_duration(method: str, args: tuple = (), kwargs: Mapping[str, Any] | None = None,
                      cap: int | None = None) -> int:
    """Seconds of GPU one call asks ZeroGPU for: loading the model onto the GPU, then the work the request names
    (tokens x (warm-up + repeats), or denoising steps x (warm-up + repeats)), with a margin; at least
    `MIN_DURATION_S`, at most ``cap`` (`max_duration_s`). A smaller request ranks higher in ZeroGPU's queue and
    passes its quota check (the requested duration must fit in the visitor's remaining quota) more often."""
    from arena.types import ImageRunRequest, PreparedImage, PreparedText, TextRunRequest

    cap = max_duration_s() if cap is None else cap
    found = [*args, *(kwargs or {}).values()]
    prepared = next((a for a in found if isinstance(a, (PreparedText, PreparedImage))), None)
    request = next((a for a in found if isinstance(a, (TextRunRequest, ImageRunRequest))), None)
    params = getattr(prepared, "parameters", None) or UNKNOWN_PARAMETERS
    billions = params / 1e9
    seconds = 8.0 + 4.0 * billions  # fork, CUDA context, weights from disk to the GPU (fp32 at ~1 GB/s)
    if isinstance(request, TextRunRequest):
        tokens = request.max_new_tokens * (request.warmup + request.repeats) + 16  # + the logits pass
        seconds += tokens * (0.03 + 0.02 * billions)  # generate()'s Python loop on a GPU, growing with size
    elif isinstance(request, ImageRunRequest):
        steps = request.steps * (getattr(request, "warmup", 0) + getattr(request, "repeats", 1))
        seconds += steps * (0.05 + 0.15 * billions) + 5.0  # UNet steps, text encoder and VAE decode
    else:  # scoring, quality figures, layer outputs: forward passes over a few hundred tokens
        sequences = next((a for a in args if isinstance(a, list)), [])
        seconds += 5.0 + 0.5 * len(sequences)
    return int(min(cap, max(MIN_DURATION_S, round(seconds * 1.5))))


def _duration(target: str, cache_dir: str, method: str, args: tuple, kwargs: dict) -> int:
    """The duration callable @spaces.GPU receives: the same arguments as `gpu_call`."""
    return estimate_duration(method, args, kwargs)


# --- the decorated path ----------------------------------------------------------------------------------------
_HOSTS: dict[tuple[str, str], Any] = {}  # in the process a call runs in: the loaded backend, kept across calls
_decorated: Any = None
_install_error: str | None = None
_install_lock = threading.Lock()


def gpu_call(target: str, cache_dir: str, method: str, args: tuple, kwargs: dict) -> Any:
    """Run ``BackendHost(target).method(*args)`` here: inside @spaces.GPU this is the forked process that holds
    the GPU. Arguments and result cross a pipe (pickled), so no progress callback comes along."""
    from arena.running.host import BackendHost

    key = (target, cache_dir)
    host = _HOSTS.get(key)
    if host is None:
        host = _HOSTS[key] = BackendHost(target, cache_dir)
    return getattr(host, method)(*args, progress=_silent, **kwargs)


def _silent(*_args: Any, **_kwargs: Any) -> None:
    pass


def install() -> Any:
    """Import spaces and decorate `gpu_call` with ``spaces.GPU(duration=...)``; call it before Gradio's launch so
    that spaces reports the function to ZeroGPU at start-up (a ZeroGPU Space without one is stopped). Off ZeroGPU
    spaces.GPU returns the function itself (spaces/zero/decorator.py), so the path is the same code everywhere.
    Returns the decorated function, or None with `_install_error` saying why."""
    global _decorated, _install_error
    with _install_lock:
        if _decorated is None and _install_error is None:
            try:
                import spaces

                _decorated = spaces.GPU(duration=_duration)(gpu_call)
            except Exception as exc:  # noqa: BLE001 - said in the Environment tab and by each refused run
                _install_error = f"{type(exc).__name__}: {exc}"
        return _decorated


class GPUHost:
    """Called like a worker's `Hosted` BackendHost (``host.run_text(prepared, spec, request, progress=...,
    timeout=..., cancel=...)``), but each call runs in a @spaces.GPU call instead of a worker process."""

    def __init__(self, target: str, cache_dir: str):
        self.target, self.cache_dir = target, cache_dir

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, progress: Any = None, timeout: float | None = None, cancel: Any = None,
                 memory_limit: Any = None, **kwargs: Any) -> Any:  # (spaces' forked process: ZeroGPU's limits)
            from arena.running.workers import RunStopped, WorkerFailed

            if cancel is not None and cancel.is_set():
                raise RunStopped(f"The run was stopped before '{method}' started.")
            decorated = install()
            if decorated is None:
                raise WorkerFailed(f"ZeroGPU: the @spaces.GPU path could not be set up: {_install_error}")
            seconds = estimate_duration(method, args, kwargs)
            if progress is not None:
                progress(None, f"ZeroGPU: asking for a GPU for up to {seconds} s (waits in ZeroGPU's queue; no "
                               "progress is shown until the call returns)")
            try:
                return decorated(self.target, self.cache_dir, method, args, kwargs)
            except Exception as exc:  # noqa: BLE001 - a quota or queue refusal (gr.Error) or the call's own error
                message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                title = getattr(exc, "title", None)
                raise WorkerFailed(f"ZeroGPU{f' ({title})' if title else ''}: {message}",
                                   type(exc).__name__) from exc

        call.__name__ = method
        return call
