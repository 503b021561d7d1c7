"""Long-lived worker processes, one per backend, so native crashes and thread pools stay contained.

The parent (UI or CLI process) talks to a worker over a multiprocessing pipe with small tuples:

    parent -> worker   (call_id, op, args, kwargs)
    worker -> parent   ("progress", call_id, fraction | None, description)
                       ("result", call_id, value)
                       ("error", call_id, {"type", "message", "traceback"})

A worker that dies (segfault, OOM kill) or overruns its timeout becomes a `WorkerCrashed` carrying the
signal and the last lines of its log; the next call starts a fresh process.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from arena.errors import ArenaError
from arena.running.resources import apply_thread_env

T = TypeVar("T")

ProgressCallback = Callable[[float | None, str], None]

_SPAWN = multiprocessing.get_context("spawn")


class WorkerCrashed(ArenaError):
    """The worker process died or was killed while working on a call."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


class RunStopped(WorkerCrashed):
    """The caller asked to stop (the Stop button): the worker and its children were killed mid-call."""


class WorkerFailed(ArenaError):
    """The call raised inside the worker; the worker itself is still alive."""

    def __init__(self, message: str, error_type: str = "", remote_traceback: str = "", log_tail: str = ""):
        super().__init__(message)
        self.error_type = error_type
        self.remote_traceback = remote_traceback
        self.log_tail = log_tail


def describe_exit(exitcode: int | None) -> str:
    """Say how a process ended, naming the signal (SIGSEGV, SIGKILL...) when there was one."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {exitcode}"


def read_log_tail(path: Path, lines: int = 25, max_bytes: int = 16384) -> str:
    """The last lines of a log file (what a crashed native library printed before dying)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class Worker:
    """A child process hosting one object built from ``target`` ("module:Class", with ``init_args``).

    Cheap to construct: the process starts on the first call. Calls are serialised by a lock.
    """

    def __init__(self, name: str, target: str, init_args: tuple = (), log_dir: Path | None = None,
                 env: dict[str, str] | None = None, workdir: str | None = None):
        self.name = name
        # The folder the process runs in (None: the parent's). Public mode gives workers an empty one: a loader
        # that opens a relative name from a repository's config must find nothing of the server's there.
        self.workdir = workdir
        self.target = target
        self.init_args = init_args
        self.log_dir = Path(log_dir) if log_dir else Path.cwd()
        self.env = dict(env or {})
        self.log_path = self.log_dir / f"worker-{name}.log"
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stopped = False  # set by `stop`: the worker never starts again (the app is shutting down)
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def _start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        parent_conn, child_conn = _SPAWN.Pipe(duplex=True)
        process = _SPAWN.Process(
            target=_worker_main,
            args=(child_conn, self.target, self.init_args, str(self.log_path), self.env, self.workdir),
            name=f"arena-{self.name}",
            daemon=False,  # workers start their own children (isolated exports); daemons may not
        )
        process.start()
        child_conn.close()
        self._process, self._conn = process, parent_conn
        self.starts += 1

    def call(self, op: str, *args: Any, progress: ProgressCallback | None = None,
             timeout: float | None = None, cancel: threading.Event | None = None, **kwargs: Any) -> Any:
        """Run ``op`` on the hosted object and return its value; progress events go to ``progress``.

        ``cancel`` set while the call runs kills the worker and everything it started (an export, an engine
        build) within about 0.1 s and raises `RunStopped`; the next call starts a fresh worker.
        """
        if cancel is not None and cancel.is_set():
            raise RunStopped(f"The run was stopped before '{op}' started.")
        with self._lock:
            if self._stopped:
                raise WorkerCrashed(f"The {self.name} worker was stopped: the app is shutting down.")
            if not self.is_alive():
                self._discard()
                self._start()
            call_id = next(self._ids)
            try:
                self._conn.send((call_id, op, args, kwargs))
            except (BrokenPipeError, OSError) as exc:
                self._discard()
                raise WorkerCrashed(f"The {self.name} worker could not take the call ({exc}).") from exc
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                if cancel is not None and cancel.is_set():
                    self._kill()
                    raise RunStopped(f"Stopped: the {self.name} worker was ended during '{op}'.")
                if deadline is not None and time.monotonic() > deadline:
                    tail = read_log_tail(self.log_path)
                    self._kill()
                    raise WorkerCrashed(
                        f"The {self.name} worker did not finish '{op}' within {timeout:.0f} s and was stopped.",
                        tail)
                try:
                    ready = self._conn.poll(0.1)
                    message = self._conn.recv() if ready else None
                except (EOFError, OSError):
                    message, ready = None, False
                if message is None:
                    if not self._process.is_alive() or ready:
                        self._process.join(5)
                        how = describe_exit(self._process.exitcode)
                        tail = read_log_tail(self.log_path)
                        self._discard()
                        raise WorkerCrashed(f"The {self.name} worker {how} during '{op}'.", tail)
                    continue
                kind, message_id = message[0], message[1]
                if message_id != call_id:
                    continue  # a stale reply from a call whose caller gave up
                if kind == "progress":
                    if progress is not None:
                        progress(message[2], message[3], *message[4:])  # a partial answer, when one came
                elif kind == "result":
                    return message[2]
                elif kind == "error":
                    info = message[2]
                    raise WorkerFailed(info["message"], info["type"], info["traceback"],
                                       read_log_tail(self.log_path))

    def _kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            children = descendants(self._process.pid)  # an isolated export or build must not run on, orphaned
            self._process.kill()
            kill_all(children)
            self._process.join(5)
        self._discard()

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to exit (it unloads and frees its memory), kill it if it does not. A worker busy with a
        call (the app shutting down mid-run) is killed with what it started; that call's caller gets
        `WorkerCrashed`. A stopped worker refuses later calls instead of starting a new process."""
        self._stopped = True
        if not self._lock.acquire(timeout=1.0):
            process = self._process
            if process is not None and process.is_alive():
                children = descendants(process.pid)
                process.kill()
                kill_all(children)
            return
        try:
            if self.is_alive():
                try:
                    self._conn.send((0, "__shutdown__", (), {}))
                    self._process.join(timeout)
                except (BrokenPipeError, OSError):
                    pass
            self._kill()
        finally:
            self._lock.release()


class Hosted(Generic[T]):
    """A worker's hosted object, called like the object itself: ``Hosted(worker, BackendHost).run_text(prepared,
    spec, request, progress=..., timeout=..., cancel=...)``. The method must be a public method of the hosted
    class and its arguments must fit its signature, checked here before anything crosses the pipe (a typo is an
    AttributeError or TypeError in the caller, not a remote failure). ``progress``, ``timeout`` and ``cancel``
    are `Worker.call`'s own (the hosted method gets the worker's progress reporter as ``progress``)."""

    def __init__(self, worker: Worker, hosted: type[T]):
        self.worker, self.hosted = worker, hosted

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.hosted, name, None) if not name.startswith("_") else None
        if not callable(method):
            raise AttributeError(f"{self.hosted.__name__} has no method {name!r} a worker can call.")
        signature = inspect.signature(method)

        def call(*args: Any, progress: ProgressCallback | None = None, timeout: float | None = None,
                 cancel: threading.Event | None = None, **kwargs: Any) -> Any:
            signature.bind(None, *args, progress=None, **kwargs)  # self, the arguments, the worker's progress
            return self.worker.call(name, *args, progress=progress, timeout=timeout, cancel=cancel, **kwargs)

        call.__name__ = name
        return call


def descendants(pid: int) -> list:
    """Every process ``pid`` started, and theirs (psutil handles)."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def kill_all(processes: list) -> None:
    """SIGKILL each; not waited for (their parent, killed first, no longer reaps them: init does)."""
    import psutil

    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass


class WorkerProgress:
    """The callable a hosted object gets to report progress; throttled so the pipe stays quiet."""

    def __init__(self, conn, call_id: int, min_interval_s: float = 0.2):
        self._conn, self._call_id, self._min_interval = conn, call_id, min_interval_s
        self._last = 0.0

    def __call__(self, fraction: float | None, description: str, force: bool = False, partial: Any = None) -> None:
        """``partial``: a piece of the answer so far (a text's tokens, decoded), passed to the caller's progress
        callback as a third argument."""
        now = time.monotonic()
        if not force and fraction not in (0.0, 1.0, None) and now - self._last < self._min_interval:
            return
        self._last = now
        self._conn.send(("progress", self._call_id, fraction, description)
                        + (() if partial is None else (partial,)))


def _resolve(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _worker_main(conn, target: str, init_args: tuple, log_path: str, env: dict[str, str],
                 workdir: str | None = None) -> None:
    # Native libraries print to file descriptors 1 and 2; send both to the log so a crash leaves its last words.
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    os.environ.update(env)
    os.environ["ARENA_WORKER_LOG"] = log_path
    if workdir:
        here = os.getcwd()
        sys.path[:] = [os.path.join(here, p) if not os.path.isabs(p) else p for p in sys.path]  # '' meant here
        os.chdir(workdir)
    apply_thread_env()  # OMP/MKL threads from the CPU budget, before the target imports torch
    print(f"--- worker {target}{init_args} pid {os.getpid()} started {time.strftime('%Y-%m-%d %H:%M:%S')}",
          flush=True)
    hosted = _resolve(target)(*init_args)
    while True:
        try:
            call_id, op, args, kwargs = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            break  # the parent went away
        if op == "__shutdown__":
            break
        try:
            method = getattr(hosted, op)
            value = method(*args, progress=WorkerProgress(conn, call_id), **kwargs)
            conn.send(("result", call_id, value))
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a value for the parent
            traceback.print_exc()
            message = str(exc) if isinstance(exc, ArenaError) else f"{type(exc).__name__}: {exc}"
            try:
                conn.send(("error", call_id, {"type": type(exc).__name__, "message": message,
                                              "traceback": traceback.format_exc()}))
            except (BrokenPipeError, OSError):
                break
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                break
    close = getattr(hosted, "close", None)
    if callable(close):
        close()
    print(f"--- worker pid {os.getpid()} exiting", flush=True)


def _isolated_main(target: str, args: tuple, error_path: str) -> None:
    apply_thread_env()
    try:
        _resolve(target)(*args)
    except BaseException as exc:  # noqa: BLE001 - reported through the error file and the exit code
        traceback.print_exc()
        message = str(exc) if isinstance(exc, ArenaError) else f"{type(exc).__name__}: {exc}"
        Path(error_path).write_text(message)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def run_isolated(target: str, *args: Any, description: str, progress: ProgressCallback | None = None,
                 log_path: str | Path | None = None, timeout: float | None = None) -> None:
    """Run ``target(*args)`` in a fresh process and wait; a crash there becomes a clear `WorkerCrashed`.

    Used for one-off conversions (ONNX export, quantization): a segfault in an exporter must not take the
    worker down, and torch's thread pool must not stay in the process that then times ONNX Runtime.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="arena-isolated-") as scratch:
        error_path = os.path.join(scratch, "error.txt")
        process = _SPAWN.Process(target=_isolated_main, args=(target, args, error_path),
                                 name="arena-isolated", daemon=False)
        start = time.monotonic()
        process.start()
        while process.is_alive():
            process.join(0.5)
            elapsed = time.monotonic() - start
            if progress is not None:
                progress(None, f"{description} ({elapsed:.0f} s)")
            if timeout is not None and elapsed > timeout:
                process.kill()
                process.join(5)
                raise WorkerCrashed(f"{description} did not finish within {timeout:.0f} s and was stopped.",
                                    read_log_tail(Path(log_path)) if log_path else "")
        if process.exitcode == 0:
            return
        tail = read_log_tail(Path(log_path)) if log_path else ""
        if os.path.exists(error_path):
            raise WorkerCrashed(f"{description} failed: {Path(error_path).read_text().strip()}", tail)
        raise WorkerCrashed(f"{description} crashed: the process {describe_exit(process.exitcode)}.", tail)
