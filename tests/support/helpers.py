"""Objects for worker tests, a deliberately broken backend and a server-like one (they run inside worker
processes)."""

from __future__ import annotations

import ctypes
import os
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from backends.contract import AVAILABLE, Availability, Backend, BackendOptions, option
from backends.torch_backend import PyTorchBackend


def segfault() -> None:
    """Crash the process the way a broken native exporter does."""
    ctypes.string_at(0)


class Toy:
    """A hosted object whose methods exercise the worker protocol."""

    def __init__(self, offset: int = 0):
        self.offset = offset
        self.calls = 0

    def add(self, a: int, b: int, progress) -> int:
        self.calls += 1
        for step in range(3):
            progress((step + 1) / 3, f"step {step + 1}", force=True)
        return a + b + self.offset

    def count(self, progress) -> int:
        return self.calls

    def pid(self, progress) -> int:
        return os.getpid()

    def fail(self, progress) -> None:
        raise ValueError("bad input, clearly explained")

    def crash(self, progress) -> None:
        print("about to touch address zero", flush=True)
        segfault()

    def sleep(self, seconds: float, progress) -> None:
        time.sleep(seconds)

    def hog(self, mb_per_step: int, steps: int, progress) -> int:
        """Take memory step by step (touched, so it is resident), as a repository that asks for more would."""
        held = []
        for _ in range(steps):
            held.append(bytearray(mb_per_step << 20))
            time.sleep(0.05)
        return len(held)

    def spin_in_native_code(self, budget_s: float, progress) -> None:
        """A budgeted step stuck in one C call that never returns to Python (a backtracking regex, say)."""
        import re

        from arena.running.workers import phase_budget

        with phase_budget(progress, budget_s, "Matching the repository's pattern"):
            re.match(r"(a|aa)+$", "a" * 60 + "b")  # exponential backtracking in the C regex engine

    def sleep_with_child(self, seconds: float, pid_file: str, progress) -> None:
        """Start a child process (like an isolated export) that writes its pid, then sleep."""
        import subprocess
        import sys

        subprocess.Popen([sys.executable, "-c", f"import os, time; open({pid_file!r}, 'w').write(str(os.getpid()));"
                          f" time.sleep({seconds})"])
        time.sleep(seconds)


def isolated_ok(path: str) -> None:
    with open(path, "w") as handle:
        handle.write("done")


def isolated_raise() -> None:
    raise RuntimeError("exporter said no")


def isolated_refuse() -> None:
    from arena.errors import ArenaError

    raise ArenaError("The toy exporter cannot export ToyForCausalLM (toy): its cache is not a KV cache.")


class ThreadProbe:
    """Says what a worker's runtimes were given: the thread variables, torch's pool as imported (before anything
    sets it, so only OMP_NUM_THREADS can have sized it) and after `torch_threads`, an ONNX Runtime session's."""

    def threads(self, progress) -> dict:
        import onnxruntime
        import torch

        from backends.hf import ort_session_options, torch_threads
        from backends.onnxruntime.providers import probe_model

        as_imported = torch.get_num_threads()
        session = onnxruntime.InferenceSession(probe_model(), sess_options=ort_session_options(onnxruntime),
                                               providers=["CPUExecutionProvider"])
        return {"env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
                "torch_as_imported": as_imported, "torch": torch_threads(),
                "ort_intra_op": session.get_session_options().intra_op_num_threads,
                "ort_inter_op": session.get_session_options().inter_op_num_threads}


def isolated_thread_env(path: str) -> None:
    with open(path, "w") as handle:
        handle.write(f"{os.environ.get('OMP_NUM_THREADS')} {os.environ.get('MKL_NUM_THREADS')}")


class SegfaultingBackend(PyTorchBackend):
    """PyTorch that loads normally and then segfaults while generating (a native crash mid-run)."""

    name = "segfaulting"
    title = "Segfaulting PyTorch"

    @classmethod
    def can_be_reference(cls, values) -> bool:
        return False  # a run's "auto" reference stays the real PyTorch next to it

    def generate_text(self, prompt_ids, settings, on_token):
        print("segfaulting backend: generating", flush=True)
        segfault()
        return []


def wheel_from_pypi(requirement: str, home: Path, marker: str) -> Path:
    """The unpacked wheel of ``requirement`` (no dependencies) under ``home``/site, downloaded from PyPI once;
    ``marker`` is a path inside it that proves a complete unpack. Skips the test when PyPI cannot be reached."""
    import subprocess
    import sys

    import pytest

    site = home / "site"
    if not (site / marker).exists():
        wheels = home / "wheel"
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                              "-d", str(wheels), requirement], capture_output=True, text=True, timeout=600)
        found = sorted(wheels.glob("*.whl"))
        if got.returncode or not found:
            pytest.skip(f"could not download {requirement} from PyPI: "
                        f"{(got.stderr or got.stdout).strip().splitlines()[-1:]}")
        unpack(found[0], site)
    return site


def unpack(wheel_path: Path, target: Path) -> None:
    """Extract next to ``target`` and rename into place: an interrupted run leaves no half-extracted package."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(wheel_path) as wheel:
        wheel.extractall(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


@dataclass(frozen=True)
class EchoServerOptions(BackendOptions):
    base_url: str | None = option(None, kind="url", label="Base URL", tasks=("text",),
                                  placeholder="http://127.0.0.1:8000/v1")
    model: str | None = option(None, kind="text", label="Model name on the server", tasks=("text",))
    key_env: str = option("ECHO_KEY", kind="secret_env", label="API key variable", tasks=("text",))


class EchoServerBackend(Backend):
    """What a model-server backend looks like to the contract, without a server: text only, unticked by default,
    a URL, a model name and a secret's variable; it records the settings it gets and says what it "sent" in its
    run notes. No logits."""

    name = "echo-server"
    title = "Echo server"
    Options = EchoServerOptions
    tasks = ("text",)
    enabled_by_default = False

    def __init__(self) -> None:
        self.seen: list = []
        self.run_notes: list[str] = []

    @classmethod
    def availability(cls, env) -> Availability:
        return AVAILABLE

    @classmethod
    def label(cls, values) -> str:
        return " · ".join([cls.title, *(str(values[k]) for k in ("model", "base_url") if values.get(k))])

    def load(self, model, spec, ctx) -> None:
        with ctx.stage("load"):
            ctx.notes.append(f"connected to {spec.base_url}")

    def generate_text(self, prompt_ids, settings, on_token):
        self.seen.append(settings)
        self.run_notes = [f"request: {settings.prompt_format} prompt {settings.user_prompt!r}, "
                          f"{settings.max_new_tokens} tokens"]
        ids = [5, 6, 7][:settings.max_new_tokens]
        for token in ids:
            on_token(token)
        return ids

    def generate_image(self, model, settings, on_phase, on_step):
        raise RuntimeError("Echo server makes no images.")

    def runtime_info(self):
        return {"provider": "echo", "artifact_dir": None, "export_cached": None}

    def unload(self) -> None:
        self.seen = []


class RssSampler:
    """The peak resident memory of a process and of each process it started (workers, exports), sampled every
    ``interval`` seconds in a thread, from the moment it starts: what a hostile request made each of them use."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.peaks: dict[int, int] = {}  # pid: bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self._stop.wait(self.interval):
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def reset(self) -> None:
        self.peaks.clear()

    @property
    def app_peak(self) -> int:
        return self.peaks.get(self.pid, 0)

    @property
    def worker_peak(self) -> int:
        return max((rss for pid, rss in self.peaks.items() if pid != self.pid), default=0)
