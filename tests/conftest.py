"""Shared fixtures: one artifact cache per test session, locally built tiny models, a running app."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# No test ever reaches a model hub: every model is built here or ships in a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One artifact cache for the whole session, so the embedded model is materialized and exported once."""
    return tmp_path_factory.mktemp("arena-cache")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from tests.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def arena(session_cache):
    from arena.core import Arena

    core = Arena(cache_dir=session_cache,
                 extra_backends={"segfaulting": "tests.helpers:SegfaultingBackend"})
    yield core
    core.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def launched_app(cache: Path, log_dir: Path, args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 preexec_fn=None):
    """`python app.py ARGS` in its own process, configured only through flags and documented environment
    variables; yields {"url", "pid", "log"} once it answers, and stops it afterwards."""
    port = free_port()
    full_env = dict(os.environ, ARENA_CACHE_DIR=str(cache), GRADIO_SERVER_NAME="127.0.0.1",
                    GRADIO_SERVER_PORT=str(port), PYTHONUNBUFFERED="1", **(env or {}))
    log_path = log_dir / "app.log"
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, env=full_env, stdout=log,
                               stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.close()
                pytest.fail(f"The app did not come up on {url}:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
    try:
        yield {"url": url, "pid": process.pid, "log": log_path}
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="session")
def app_server(session_cache, tmp_path_factory):
    """The app as a local user runs it."""
    with launched_app(session_cache, tmp_path_factory.mktemp("app")) as app:
        yield app


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    from tests.tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipeline")
