"""The app in its own process for a test (`running_app`), a free port, and where screenshots go."""

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

from tests.support import ROOT

# Screenshots the browser tests take: a temporary folder (tests never write tracked files), or docs/screenshots when
# `make screenshots` sets ARENA_SCREENSHOTS (the README's and docs' pictures come from that run).
SCREENSHOTS = Path(os.environ.get("ARENA_SCREENSHOTS") or
                   Path(os.environ.get("TMPDIR", "/tmp")) / f"arena-screenshots-{os.getpid()}")


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
        stop_process(process, 30)
        log.close()
        _, left = psutil.wait_procs(started, timeout=10)
        named = []
        for child in left:
            with contextlib.suppress(psutil.Error):
                named.append(" ".join(child.cmdline()) or child.name())
                child.kill()
        assert not named, f"the app left {named} running after SIGTERM"


def stop_process(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM (as a Space restart or docker stop sends it), then SIGKILL after ``grace_s``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
