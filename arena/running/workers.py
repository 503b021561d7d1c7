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

import contextlib
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


class WorkerOverMemory(WorkerCrashed):
    """The worker (with what it started) went over the memory limit its caller set and was killed."""


class WorkerOverBudget(WorkerCrashed):
    """A step the worker declared with a time budget (`phase_budget`) ran past it; the worker was killed."""


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
                 env: dict[str, str] | None = None, workdir: str | None = None, data_limit: int | None = None):
        self.name = name
        # RLIMIT_DATA of the process (and what it starts): the kernel refuses allocations past it, whatever the
        # loaded repository asks for. Per call, `call(memory_limit=...)` is the tighter, watched limit.
        self.data_limit = data_limit
        self.peak_rss = 0  # bytes, the worker and its children together, over the last call
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
            args=(child_conn, self.target, self.init_args, str(self.log_path), self.env, self.workdir,
                  self.data_limit),
            name=f"arena-{self.name}",
            daemon=False,  # workers start their own children (isolated exports); daemons may not
        )
        process.start()
        child_conn.close()
        self._process, self._conn = process, parent_conn
        self.starts += 1

    def call(self, op: str, *args: Any, progress: ProgressCallback | None = None,
             timeout: float | None = None, cancel: threading.Event | None = None,
             memory_limit: MemoryLimit | None = None, **kwargs: Any) -> Any:
        """Run ``op`` on the hosted object and return its value; progress events go to ``progress``.

        ``cancel`` set while the call runs kills the worker and everything it started (an export, an engine
        build) within about 0.1 s and raises `RunStopped`; the next call starts a fresh worker.
        ``memory_limit``: the worker and its children together are sampled every 0.1 s and killed past it
        (`WorkerOverMemory`). A step the worker runs under `phase_budget` is killed past its budget
        (`WorkerOverBudget`), even inside native code that never returns to Python.
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
            trim_log(self.log_path)
            try:
                self._conn.send((call_id, op, args, kwargs))
            except (BrokenPipeError, OSError) as exc:
                self._discard()
                raise WorkerCrashed(f"The {self.name} worker could not take the call ({exc}).") from exc
            deadline = None if timeout is None else time.monotonic() + timeout
            phase: tuple[float, float, str] | None = None  # (deadline, budget, what) of a budgeted step
            watch = _MemoryWatch(self._process.pid, memory_limit)
            self.peak_rss = 0
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
                if phase is not None and time.monotonic() > phase[0]:
                    tail = read_log_tail(self.log_path)
                    self._kill()
                    raise WorkerOverBudget(f"{phase[2]} took longer than its budget of {phase[1]:g} s on this "
                                           "server and was stopped.", tail)
                over = watch.sample()
                self.peak_rss = watch.peak
                if over:
                    tail = read_log_tail(self.log_path)
                    self._kill()
                    raise WorkerOverMemory(over, tail)
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
                if kind == "budget":
                    seconds, what = message[2], message[3]
                    phase = None if seconds is None else (time.monotonic() + seconds, seconds, what)
                elif kind == "progress":
                    if progress is not None:
                        progress(message[2], message[3], *message[4:])  # a partial answer, when one came
                elif kind == "result":
                    return message[2]
                elif kind == "error":
                    info = message[2]
                    if info["type"] == "MemoryError":  # the kernel refused an allocation past RLIMIT_DATA
                        what = memory_limit.what if memory_limit is not None else f"The {self.name} worker"
                        cap = f" of {self.data_limit / 1e9:.1f} GB" if self.data_limit else ""
                        raise WorkerOverMemory(f"{what} asked for more memory than its limit{cap} on this server "
                                               "allows and was stopped.", read_log_tail(self.log_path))
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
    and ``memory_limit`` are `Worker.call`'s own (the hosted method gets the worker's progress reporter as
    ``progress``)."""

    def __init__(self, worker: Worker, hosted: type[T],
                 memory_limit: Callable[[tuple], MemoryLimit | None] | None = None):
        # ``memory_limit(args)``: the limit of a call with these arguments (its first is the prepared input, whose
        # checked size sets it), asked at each call because the other workers' memory changes between calls.
        self.worker, self.hosted, self.memory_limit = worker, hosted, memory_limit

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.hosted, name, None) if not name.startswith("_") else None
        if not callable(method):
            raise AttributeError(f"{self.hosted.__name__} has no method {name!r} a worker can call.")
        signature = inspect.signature(method)

        def call(*args: Any, progress: ProgressCallback | None = None, timeout: float | None = None,
                 cancel: threading.Event | None = None, memory_limit: MemoryLimit | None = None,
                 **kwargs: Any) -> Any:
            signature.bind(None, *args, progress=None, **kwargs)  # self, the arguments, the worker's progress
            if memory_limit is None and self.memory_limit is not None:
                memory_limit = self.memory_limit(args)
            return self.worker.call(name, *args, progress=progress, timeout=timeout, cancel=cancel,
                                    memory_limit=memory_limit, **kwargs)

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


@dataclass(frozen=True)
class MemoryLimit:
    """The most memory (resident, the worker and everything it started) one call may use, and why that much."""

    limit: int  # bytes
    what: str  # who is limited: "The preparation", "ONNX Runtime · cpu · fp32"
    why: str = ""  # how the figure was chosen, for the sentence

    def sentence(self, used: int) -> str:
        why = f" ({self.why})" if self.why else ""
        return (f"{self.what} used {used / 1e9:.1f} GB of memory, over its limit of {self.limit / 1e9:.1f} GB on "
                f"this server{why}, and was stopped.")


class _MemoryWatch:
    """Samples a worker's resident memory, with its children's (an isolated export), in the call's poll loop."""

    CHILDREN_EVERY_S = 1.0  # the children list walks /proc; the worker's own figure is one small read

    def __init__(self, pid: int | None, limit: MemoryLimit | None):
        self.limit, self.peak = limit, 0
        self._process = None
        self._children: list = []
        self._listed = 0.0
        if pid is not None and limit is not None:
            import psutil

            try:
                self._process = psutil.Process(pid)
            except psutil.Error:
                self._process = None

    def sample(self) -> str | None:
        """The over-limit sentence, or None."""
        if self._process is None:
            return None
        import psutil

        now = time.monotonic()
        try:
            if now - self._listed > self.CHILDREN_EVERY_S:
                self._children, self._listed = self._process.children(recursive=True), now
            used = self._process.memory_info().rss
        except psutil.Error:
            return None  # gone: the poll loop reports how it ended
        for child in self._children:
            try:
                used += child.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, used)
        return self.limit.sentence(used) if used > self.limit.limit else None


@contextlib.contextmanager
def phase_budget(progress: Any, seconds: float, what: str) -> Iterator[None]:
    """Declare a step with a time budget (rendering a repository's chat template, tokenizing with its regexes):
    the worker's caller kills the worker if the step is still running after ``seconds``, native code included.
    A plain progress callable (a call made without a worker) runs the step unbounded."""
    declare = getattr(progress, "budget", None)
    if declare is None:
        yield
        return
    declare(seconds, what)
    try:
        yield
    finally:
        declare(None, "")


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

    def budget(self, seconds: float | None, what: str) -> None:
        """Start (``seconds``) or end (None) a budgeted step: see `phase_budget`."""
        self._conn.send(("budget", self._call_id, seconds, what))


def _resolve(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


MAX_ERROR_CHARS = 2000  # an error's message, as it crosses to the app
MAX_TRACEBACK_CHARS = 20_000  # its traceback, in the log and to the app
MAX_LOG_BYTES = 64 << 20  # a worker's log is cut to its last MAX_LOG_KEEP_BYTES past this, when a call ends
MAX_LOG_KEEP_BYTES = 1 << 20


def bounded_error(exc: BaseException) -> tuple[str, str]:
    """(message, traceback) of ``exc``, each bounded: a repository can make an exception's text any size (a chat
    template's ``raise_exception`` of a 784-million-character list), and both go to the app and to the log."""
    def cut(text: str, limit: int) -> str:
        return text if len(text) <= limit else text[:limit // 2] + f" … ({len(text):,} characters) … " + \
            text[-limit // 2:]

    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - an exception whose str fails still becomes a message
        text = ""
    text = cut(text, MAX_ERROR_CHARS)
    message = text if isinstance(exc, ArenaError) else f"{type(exc).__name__}: {text}"
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return message, cut(f"Traceback (most recent call last):\n{frames}{message}", MAX_TRACEBACK_CHARS)


def trim_log(path: Path) -> None:
    """Keep a worker's log from growing without end (a native library printing in a loop, tracebacks of many
    runs): past `MAX_LOG_BYTES`, only its last `MAX_LOG_KEEP_BYTES` are kept. The worker appends (O_APPEND),
    so its next line lands at the new end."""
    try:
        if path.stat().st_size <= MAX_LOG_BYTES:
            return
        with open(path, "rb") as handle:
            handle.seek(-MAX_LOG_KEEP_BYTES, os.SEEK_END)
            tail = handle.read()
        with open(path, "r+b") as handle:
            handle.write(b"--- (earlier lines cut: the log passed its size cap)\n" + tail)
            handle.truncate()
    except OSError:
        pass


def limit_data(limit: int | None) -> None:
    """RLIMIT_DATA for this process and its children: private writable memory (heap, anonymous maps) past
    ``limit`` is refused by the kernel (Python raises MemoryError). Reserved but untouched address space (PROT_NONE,
    as CUDA and allocators reserve it) does not count, which is why this and not RLIMIT_AS."""
    if not limit or not hasattr(os, "fork"):
        return
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_DATA, (int(limit), int(limit)))
    except (ValueError, OSError) as exc:
        print(f"--- could not set RLIMIT_DATA to {limit}: {exc}", flush=True)


def _worker_main(conn, target: str, init_args: tuple, log_path: str, env: dict[str, str],
                 workdir: str | None = None, data_limit: int | None = None) -> None:
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
    limit_data(data_limit)
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
            message, trace = bounded_error(exc)
            print(trace, flush=True)
            try:
                conn.send(("error", call_id, {"type": type(exc).__name__, "message": message, "traceback": trace}))
            except (BrokenPipeError, OSError):
                break
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                break
    close = getattr(hosted, "close", None)
    if callable(close):
        close()
    print(f"--- worker pid {os.getpid()} exiting", flush=True)


SENTENCE_MARK = "\x00arena-sentence\x00"  # an isolated target's ArenaError: its message is shown as it is


def _isolated_main(target: str, args: tuple, error_path: str) -> None:
    apply_thread_env()
    try:
        _resolve(target)(*args)
    except BaseException as exc:  # noqa: BLE001 - reported through the error file and the exit code
        message, trace = bounded_error(exc)
        print(trace, flush=True)
        # An ArenaError is already the user's sentence (an exporter that cannot take an architecture says so).
        Path(error_path).write_text((SENTENCE_MARK if isinstance(exc, ArenaError) else "") + message)
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
            text = Path(error_path).read_text().strip()
            if text.startswith(SENTENCE_MARK):
                raise WorkerCrashed(text[len(SENTENCE_MARK):].strip(), tail)
            raise WorkerCrashed(f"{description} failed: {text}", tail)
        raise WorkerCrashed(f"{description} crashed: the process {describe_exit(process.exitcode)}.", tail)
