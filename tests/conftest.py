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
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

# Screenshots the browser tests take: a temporary folder (tests never write tracked files), or docs/screenshots when
# `make screenshots` sets ARENA_SCREENSHOTS (the README's and docs' pictures come from that run).
SCREENSHOTS = Path(os.environ.get("ARENA_SCREENSHOTS") or
                   Path(os.environ.get("TMPDIR", "/tmp")) / f"arena-screenshots-{os.getpid()}")
if str(Path(__file__).resolve().parent.parent) not in sys.path:  # `tests.support` imports from the root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import ROOT  # noqa: E402 - after the path set-up

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
    from tests.support.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def arena(session_cache):
    from arena.core import Arena

    core = Arena(cache_dir=session_cache,
                 extra_backends={"segfaulting": "tests.support.helpers:SegfaultingBackend"})
    yield core
    core.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(cache_dir: Path, log_dir: Path, preexec_fn=None, args: tuple[str, ...] = (),
                **extra_env: str) -> Iterator[dict]:
    """`python app.py ARGS` in its own process (``--no-warm-up`` unless ARGS say otherwise), configured only through
    its flags and the documented environment variables, until the block ends; ``preexec_fn`` runs in the child
    before the app starts (e.g. to pin it to one CPU)."""
    port = free_port()
    env = dict(os.environ, ARENA_CACHE_DIR=str(cache_dir), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_SERVER_PORT=str(port), PYTHONUNBUFFERED="1", **extra_env)
    log_path = Path(log_dir) / "app.log"
    log = open(log_path, "w")
    if not any(arg.startswith(("--warm-up", "--no-warm-up")) for arg in args):
        args = (*args, "--no-warm-up")  # the tests' own runs time the cold path; test_warmup.py tests the warm-up
    process = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT,
                               preexec_fn=preexec_fn)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"The app did not come up on {url}:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield {"url": url, "pid": process.pid, "log": log_path}
    finally:
        # SIGTERM, as a Space restart or docker stop sends it: the app must end with every worker and what they
        # started (app.py's stop_on_sigterm), not leave them running on
        started = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
        _, left = psutil.wait_procs(started, timeout=10)
        named = []
        for child in left:
            with contextlib.suppress(psutil.Error):
                named.append(" ".join(child.cmdline()) or child.name())
                child.kill()
        assert not named, f"the app left {named} running after SIGTERM"


@pytest.fixture(scope="session")
def app_server(session_cache, tmp_path_factory):
    """The app for the whole session, on the session's artifact cache."""
    with running_app(session_cache, tmp_path_factory.mktemp("app")) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    from tests.support.tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipeline")


@pytest.fixture(scope="session")
def tiny_llama_gguf(tiny_llama, tmp_path_factory) -> Path:
    """A copy of the tiny Llama folder with the same weights and vocabulary as model.gguf (for llama.cpp)."""
    import shutil

    from tests.support.tiny_models import write_llama_gguf

    folder = tmp_path_factory.mktemp("tiny-llama-gguf") / "model"
    shutil.copytree(tiny_llama, folder)
    write_llama_gguf(folder, folder / "model.gguf")
    return folder
