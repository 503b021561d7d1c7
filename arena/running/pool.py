"""The worker processes of an `Arena`, one per key (a backend and device, the preparation), and the limits each
starts and calls under: its working folder, its RLIMIT_DATA and the memory one call may use."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from arena.running.resources import server_memory
from arena.running.workers import MemoryLimit, Worker, WorkerCrashed

# Worker memory (docs/space.md, "Memory"). The app process keeps APP_RESERVE_BYTES for itself; a worker's call may use
# what the server's memory leaves after that and the other workers, and in public mode no more than its model needs:
# WORKER_BASE_BYTES (the runtime's imports and working memory) plus BYTES_PER_PARAMETER of the checked size (fp32
# weights loaded, exported and held by a session at once). The preparation loads no visitor's weights.
APP_RESERVE_BYTES = 1 << 30
MIN_WORKER_BYTES = 1 << 30
WORKER_BASE_BYTES = int(3.5e9)
BYTES_PER_PARAMETER = 16
PREPARE_BYTES = int(4e9)


class WorkerPool:
    """The long-lived workers by key; `close` stops them all and no new one starts after it."""

    def __init__(self, log_dir: Path, policy) -> None:
        self.log_dir = log_dir
        self.policy = policy  # public mode: the working folder, and calls no bigger than the model needs
        self._workers: dict[str, Worker] = {}
        self._lock = threading.Lock()  # guards _workers and _empty_dir
        self._closed = False  # set by `close`: a run still going gets no new worker
        self._empty_dir: str | None = None  # public mode: the workers' working directory (`_workdir`)

    def get(self, key: str, target: str, *init_args: Any) -> Worker:
        """The worker ``key`` (started on its first call with ``target(*init_args)`` hosted in it)."""
        with self._lock:  # the preload, the warm-up and visitors' runs may ask for the same one at once
            if self._closed:
                raise WorkerCrashed("The app is shutting down: no new worker starts.")
            worker = self._workers.get(key)
            if worker is None:
                worker = Worker(key, target, init_args=init_args, log_dir=self.log_dir, workdir=self._workdir(),
                                data_limit=self.data_limit())
                self._workers[key] = worker
            return worker

    @staticmethod
    def data_limit() -> int | None:
        """Every worker's RLIMIT_DATA: the server's memory less the app's reserve. Not on a machine with an NVIDIA
        device: a CUDA context maps writable host memory of its own that the limit would count."""
        if Path("/dev/nvidiactl").exists():
            return None
        return max(MIN_WORKER_BYTES, server_memory().total - APP_RESERVE_BYTES)

    def memory_limit(self, what: str, worker: Worker, parameters: int | None = None,
                     preparation: bool = False) -> MemoryLimit:
        """The memory one call of ``worker`` may use: what the server leaves after the app's reserve and the other
        workers (each with what it started), and in public mode no more than the model's checked size needs."""
        import psutil

        memory = server_memory()
        others = 0
        for other in list(self._workers.values()):
            if other is worker or other.pid is None:
                continue
            try:
                process = psutil.Process(other.pid)
                others += sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
            except psutil.Error:
                pass
        limit = max(MIN_WORKER_BYTES, memory.total - APP_RESERVE_BYTES - others)
        why = (f"what this server's {memory.total / 1e9:.0f} GB ({memory.source}) leaves after the app and the "
               f"other workers' {others / 1e9:.1f} GB")
        if self.policy.public:
            if parameters:
                need = WORKER_BASE_BYTES + BYTES_PER_PARAMETER * int(parameters)
                how = (f"{WORKER_BASE_BYTES / 1e9:g} GB and {BYTES_PER_PARAMETER} bytes for each of the model's "
                       f"{parameters / 1e6:,.0f}M parameters")
            else:
                need = PREPARE_BYTES if preparation else WORKER_BASE_BYTES
                how = "the public server's limit for this step"
            if need < limit:
                limit, why = need, how
        return MemoryLimit(limit=limit, what=what, why=why)

    def _workdir(self) -> str | None:
        """Public mode: an empty folder the workers run in (a relative name in a visitor's config opens nothing
        of the server's, such as the app's own files in its working directory)."""
        if not self.policy.public:
            return None
        if self._empty_dir is None:
            import tempfile

            self._empty_dir = tempfile.mkdtemp(prefix="arena-worker-cwd-")
        return self._empty_dir

    def pids(self) -> dict[str, int | None]:
        return {key: worker.pid for key, worker in list(self._workers.items())}

    def close(self) -> None:
        """Stop every worker (each unloads its model and exits), all at once; no new worker starts after."""
        self._closed = True
        stopping = [threading.Thread(target=worker.stop, daemon=True) for worker in list(self._workers.values())]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join(15)
        self._workers.clear()
