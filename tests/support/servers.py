"""Real model servers a user would run, started by the tests on loopback: llama.cpp's server (llama-cpp-python)
on the embedded GGUF and `transformers serve`. Shared by tests/test_openai_backend.py and tests/test_load.py;
each module starts its own (module-scoped fixtures there), so a module that kills its server harms no other."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.app import free_port, stop_process


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=2)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"The server did not come up at {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


@contextlib.contextmanager
def real_server(command: list[str], port: int, log: Path, **env: str):
    """A server process on 127.0.0.1:port until the block ends (always stopped)."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, **env),
                                   start_new_session=True)
        try:
            wait_until_up(f"http://127.0.0.1:{port}/v1", process, log)
            yield process
        finally:
            stop_process(process, 15)


def llama_cpp_server_missing() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return ("llama-cpp-python[server] is not installed (CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install "
                "\"llama-cpp-python[server]==0.3.36\")")
    return None


def transformers_serve_missing() -> str | None:
    if importlib.util.find_spec("openai") is None:
        return "transformers serve needs transformers[serving] (pip install \"transformers[serving]\")"
    return None


@contextlib.contextmanager
def llama_cpp_server(log_dir: Path, *extra: str):
    """llama.cpp's server (llama-cpp-python) on the embedded GGUF: (base URL, process). Skips when missing."""
    from arena.preparing.catalog import CATALOG
    from arena.preparing.prepare import embedded_gguf_path

    missing = llama_cpp_server_missing()
    if missing:
        pytest.skip(missing)
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path(CATALOG[0])),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", *extra]
    with real_server(command, port, log_dir / "llama.log") as process:
        yield f"http://127.0.0.1:{port}/v1", process


@contextlib.contextmanager
def transformers_serve(log_dir: Path, *extra: str):
    """`transformers serve` (it loads a model folder on its first request): (base URL, process). Skips when
    missing."""
    missing = transformers_serve_missing()
    if missing:
        pytest.skip(missing)
    port = free_port()
    command = [str(Path(sys.executable).with_name("transformers")), "serve", "--host", "127.0.0.1", "--port",
               str(port), "--log-level", "warning", *extra]
    with real_server(command, port, log_dir / "transformers.log", HF_HUB_OFFLINE="1") as process:
        yield f"http://127.0.0.1:{port}/v1", process
