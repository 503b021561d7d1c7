"""The server's secrets (HF_TOKEN, API keys), kept out of every place a visitor's files could reach.

A loader fooled by a visitor's repository reads files, and the files that hold secrets are the environments:
``/proc/self/environ`` of the process doing the loading, and ``/proc/<pid>/environ`` of its parent. So:

- `take_from_environment` moves every secret-looking variable out of ``os.environ`` into this module, once, before
  any worker starts: workers (spawned with the parent's environment) then start without them, and a backend that
  needs a key (an OpenAI-compatible server's) gets it in memory through its load context, never its environment;
- `hide_initial_environment` re-executes the app once with those variables removed (the secrets travel through a
  pipe that is read and closed at start), because ``/proc/<pid>/environ`` shows the environment a process was
  started with, whatever ``os.environ`` says later; the app also marks itself not dumpable;
- `scrub` / `scrub_data` replace every known secret value and token-shaped string with ``<redacted>`` in whatever a
  visitor gets back (results, reports, panels, history, the environment tab).

Pure stdlib: safe in the UI process.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

# Names whose values are secrets: a word of the name (split at "_") says so. TOKENIZERS_PARALLELISM is not one.
SECRET_WORD = re.compile(r"(^|_)(TOKEN|API_?KEY|KEY|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH|AUTHORIZATION)(_|$)",
                         re.IGNORECASE)
# Broader, for scrubbing only: any name containing one of these (never used to decide what to move).
SECRET_NAME = re.compile(r"(TOKEN|API_KEY|APIKEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)
# Token shapes of the services this project talks to (Hugging Face, OpenAI-compatible servers, GitHub).
SECRET_SHAPES = re.compile(r"\b(hf_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,})\b")
REDACTED = "<redacted>"
HF_TOKEN_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
PIPE_VARIABLE = "ARENA_SECRETS_FD"  # set only between the app's re-exec and its first lines
MIN_SECRET_LENGTH = 6  # shorter values ("1", "true") are settings, not worth hiding in text

# Process-wide by nature: the environment it replaces was process-wide too. Written once at start.
_TAKEN: dict[str, str] = {}


def is_secret_name(name: str) -> bool:
    return bool(SECRET_WORD.search(name))


def take_from_environment(environ: Any = None) -> dict[str, str]:
    """Move every secret-looking variable from ``environ`` (default ``os.environ``) into this module's store and
    return what was moved. Idempotent: later calls move only what appeared since."""
    environ = os.environ if environ is None else environ
    moved = {name: environ[name] for name in list(environ) if is_secret_name(name) and environ[name]}
    for name in moved:
        del environ[name]
    _TAKEN.update(moved)
    return moved


def get(name: str) -> str | None:
    """A taken secret by its variable name (or one still in the environment, for code run outside the app)."""
    return _TAKEN.get(name) or (os.environ.get(name) if is_secret_name(name) else None)


def hf_token() -> str | None:
    """The operator's Hugging Face token: a taken HF_TOKEN, else the `hf auth login` file. Never printed."""
    for name in HF_TOKEN_NAMES:
        if get(name):
            return get(name)
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - no library, no token
        return None


def known() -> dict[str, str]:
    """Every taken secret, {name: value} (for a worker that needs one in memory)."""
    return dict(_TAKEN)


def values() -> list[str]:
    """Every secret value worth hiding: the taken ones and any secret-named variable still in the environment."""
    found = set(_TAKEN.values()) | {v for k, v in os.environ.items() if SECRET_NAME.search(k)}
    try:  # the login file's token is a secret as well, wherever it came from
        from huggingface_hub import get_token

        token = get_token() if "huggingface_hub" in sys.modules else None
        if token:
            found.add(token)
    except Exception:  # noqa: BLE001
        pass
    return sorted((v for v in found if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def _hidden(environ: Mapping[str, str] | None) -> list[str]:
    return (values() if environ is None else
            sorted({v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH},
                   key=len, reverse=True))


def scrub(text: str, environ: Mapping[str, str] | None = None, hidden: list[str] | None = None) -> str:
    """``text`` with every secret value and token-shaped string replaced by ``<redacted>``. ``environ``: an
    explicit mapping to take the values from instead (tests); ``hidden``: those values, already gathered."""
    for value in _hidden(environ) if hidden is None else hidden:
        text = text.replace(value, REDACTED)
    return SECRET_SHAPES.sub(REDACTED, text)


def scrub_data(data: Any, environ: Mapping[str, str] | None = None) -> Any:
    """`scrub` applied to every string inside a JSON-like value (dict keys included). The secret values are
    gathered once per call (gathering reads the environment and the token file: per string, a result with 50,000
    strings took 30 s of the app's CPU)."""
    hidden = _hidden(environ)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return scrub(value, hidden=hidden) if isinstance(value, str) else value

    return walk(data)


def not_dumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``: other processes of this user (the workers) cannot read this one's
    ``/proc/<pid>/environ``, ``mem`` or ``fd/``. Linux only; False where it cannot be set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        return False


def hide_initial_environment(reexec: bool = True) -> None:
    """Called first thing by app.py. With secrets in the environment (and ``reexec``): re-execute this same
    command line without them, handing them over through a pipe (read and closed by the new image at once).
    After the re-exec (or with nothing to hide): take the secrets into this module and mark the process not
    dumpable."""
    fd = os.environ.pop(PIPE_VARIABLE, None)
    if fd is not None:
        with os.fdopen(int(fd), "rb") as pipe:
            _TAKEN.update(json.loads(pipe.read() or b"{}"))
    secrets = {name: value for name, value in os.environ.items() if is_secret_name(name) and value}
    blob = json.dumps(secrets).encode()
    if reexec and secrets and fd is None and len(blob) < 60_000 and sys.platform.startswith("linux"):
        read, write = os.pipe()  # a pipe holds 64 KiB: the write cannot block before the exec
        os.write(write, blob)
        os.close(write)
        os.set_inheritable(read, True)
        env = {k: v for k, v in os.environ.items() if k not in secrets} | {PIPE_VARIABLE: str(read)}
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, list(sys.orig_argv), env)
    take_from_environment()
    not_dumpable()
