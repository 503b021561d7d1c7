"""The arena core: takes a `TextRunRequest`, prepares the shared input once, runs the backends one after
another in their worker processes and yields the growing `TextRunResult`. No heavy imports here."""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from arena.errors import ArenaError
from arena.judging.export_files import export_file_warnings
from arena.judging.memo import JudgingMemo, digest
from arena.judging.memo import identity as memo_identity
from arena.judging.verdicts import (
    REACH_CACHED_STEPS,
    REACH_SEQUENCE,
    image_floor_verdict,
    judge_image,
    judge_text,
    logits_error,
    pool_summaries,
    reference_index,
)
from arena.preparing.cache import ArtifactCache, default_cache_dir
from arena.preparing.catalog import find_catalog_model, find_image_catalog_model
from arena.preparing.demos import BrokenConversions
from arena.preparing.prepare import Preparer
from arena.public import secrets
from arena.public.policy import Policy
from arena.registry import BACKENDS, backend_class, register
from arena.running import zerogpu
from arena.running.environment import probe_environment
from arena.running.host import BackendHost
from arena.running.load import between as machine_between
from arena.running.load import sample as machine_sample
from arena.running.resources import server_memory
from arena.running.workers import Hosted, MemoryLimit, RunStopped, Worker, WorkerCrashed, WorkerFailed
from arena.sharing.history import RunHistory
from arena.types import (
    BackendImageResult,
    BackendSpec,
    BackendTextResult,
    ImageRunRequest,
    ImageRunResult,
    PreparedImage,
    PreparedText,
    TextRunRequest,
    TextRunResult,
)

ProgressFn = Callable[[float | None, str], None]

# Generous: a 7B export or first download takes many minutes; a hung worker is still stopped eventually.
PREPARE_TIMEOUT_S = 3 * 3600
RUN_TIMEOUT_S = 3 * 3600
EXAMPLES_KEPT = 8  # example results kept (four examples, a few request variants each)
STOP_WAIT_S = 5.0  # how long Stop waits for the stopped run to end before it answers
# Worker memory (docs/space.md, "Memory"). The app process keeps APP_RESERVE_BYTES for itself; a worker's call may use
# what the server's memory leaves after that and the other workers, and in public mode no more than its model needs:
# WORKER_BASE_BYTES (the runtime's imports and working memory) plus BYTES_PER_PARAMETER of the checked size (fp32
# weights loaded, exported and held by a session at once). The preparation loads no visitor's weights.
APP_RESERVE_BYTES = 1 << 30
MIN_WORKER_BYTES = 1 << 30
WORKER_BASE_BYTES = int(3.5e9)
BYTES_PER_PARAMETER = 16
PREPARE_BYTES = int(4e9)


def _quiet(_fraction: float | None, _description: str) -> None:
    pass


# Set in the start-up preparation's thread (`arena.running.warmup`): its steps give way to any visitor's.
BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("arena_background_run", default=False)


class RunLock:
    """One step of one run at a time on the cores (preparing, one backend, judging), and visitors' runs before
    background work: a background step (`BACKGROUND` set in its context, which the run's threads inherit) waits
    while any visitor's run is under way or waits. So a click during the start-up preparation waits for the step
    under way at most, not for the image model and the examples after it, and no background step slips in
    between the steps of a visitor's run. Not re-entrant, like a Lock."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._held = False
        self._visitors_waiting = 0
        self._visitor_runs = 0

    @contextlib.contextmanager
    def visitor_run(self) -> Iterator[None]:
        """Around a whole run: a visitor's keeps background steps waiting from its first step to its last."""
        if BACKGROUND.get():
            yield
            return
        with self._condition:
            self._visitor_runs += 1
        try:
            yield
        finally:
            with self._condition:
                self._visitor_runs -= 1
                self._condition.notify_all()

    def locked(self) -> bool:
        return self._held

    def acquire(self) -> None:
        background = BACKGROUND.get()
        with self._condition:
            if not background:
                self._visitors_waiting += 1
            try:
                while self._held or (background and (self._visitors_waiting or self._visitor_runs)):
                    self._condition.wait()
            finally:
                if not background:
                    self._visitors_waiting -= 1
            self._held = True

    def release(self) -> None:
        with self._condition:
            self._held = False
            self._condition.notify_all()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class Arena:
    """Owns the worker processes and the artifact cache; serves the UI, the API and the CLI alike."""

    def __init__(self, cache_dir: str | Path | None = None, environment: dict[str, Any] | None = None,
                 extra_backends: dict[str, str] | None = None, run_timeout_s: float = RUN_TIMEOUT_S,
                 policy: Policy | None = None):
        # Secrets leave the environment before any worker starts: workers inherit it, and they open visitors'
        # files (`arena.public.secrets`). A backend that needs a key gets it in memory.
        secrets.take_from_environment()
        # Absolute: workers may run in another folder (public mode).
        self.cache_dir = (Path(cache_dir) if cache_dir else default_cache_dir()).expanduser().absolute()
        self.cache = ArtifactCache(self.cache_dir)
        self.log_dir = self.cache_dir / "logs"
        self.policy = policy or Policy.local()
        self.run_timeout_s = run_timeout_s
        self._cancels: dict[str, tuple[threading.Event, threading.Event]] = {}  # owner: (stop, ended)
        self._environment = environment
        self._env_lock = threading.Lock()
        self._run_lock = RunLock()
        self._judging_memo = JudgingMemo()  # judging figures kept between runs (`arena.judging.memo`)
        # The reference's teacher-forced distributions kept between runs (`_reference_distributions`): off unless
        # one caller at a time runs many checks of one reference (`python -m arena check`, several candidates).
        self.keep_reference_distributions = False
        self._kept_distributions: dict[tuple[str, str], tuple[str, int, dict | None]] = {}  # in use order
        self._kept_dir: str | None = None
        self._kept_examples: dict[str, Any] = {}  # the examples' last judged results (`run_example`)
        self._examples_lock = threading.Lock()
        # What holds the run lock when it is not a visitor's run ("the start-up preparation of the default models",
        # `arena.running.warmup`): a run that has to wait says what it waits for.
        self.busy_with: str | None = None
        self._workers: dict[str, Worker] = {}
        # Folders each unfinished run uses (its model, its backends' artifacts): the cache's eviction after another
        # visitor's run leaves them alone (runs hold the run lock per step, so another run ends between two steps).
        self._in_use: dict[int, set[str]] = {}
        self._workers_lock = threading.Lock()  # guards _workers and _empty_dir
        self._closed = False  # set by `close`: a run still going gets no new worker
        self._empty_dir: str | None = None  # public mode: the workers' working directory (`_workdir`)
        self.backends = dict(BACKENDS) | dict(extra_backends or {})
        for name, target in (extra_backends or {}).items():
            register(name, target)
        # Kept runs: files under the cache locally; in public mode memory only, per browser session.
        limits = self.policy.limits
        self.history = (RunHistory(None, max_entry_bytes=int(limits.max_history_entry_kb * 1e3),
                                   max_session_bytes=int(limits.max_history_session_mb * 1e6))
                        if self.policy.public else RunHistory(self.cache_dir / "history"))
        self.demos = BrokenConversions(self)  # "See a broken conversion": exports broken on purpose, made on first use
        self.cache.clean_stale()
        # atexit runs last-registered first: multiprocessing's exit handler (registered when multiprocessing.util is
        # first imported, which may be later, at the first worker start) joins every worker; it must come after
        # this close, or a busy worker keeps the exiting app waiting for its whole call.
        import multiprocessing.util  # noqa: F401

        atexit.register(self.close)

    # --- environment ---------------------------------------------------------------------------------
    def environment(self) -> dict[str, Any]:
        """Facts about this machine from a child-process probe (cached for the arena's lifetime)."""
        with self._env_lock:
            if self._environment is None:
                self._environment = secrets.scrub_data(probe_environment())  # its stderr tails are shown
            return self._environment

    def backend_options(self) -> dict[str, dict[str, Any]]:
        """Per backend: title, whole-backend availability, each choice option's choices with their availability
        here, every option's description (`OptionInfo`) and the tasks it runs (for the UI)."""
        env = self.environment()
        out = {}
        for name in self.backends:
            cls = self._backend_cls(name)
            out[name] = zerogpu.restrict(cls, {  # as-is off ZeroGPU; there, GPU-only choices say why not
                "title": cls.title, "availability": cls.availability(env), "options": cls.options(env),
                "fields": cls.Options.fields_info(), "tasks": cls.tasks,
                "enabled_by_default": cls.enabled_by_default}, env)
        return out

    def _backend_cls(self, name: str):
        return backend_class(self.backends[name])

    # --- workers -------------------------------------------------------------------------------------
    def _worker(self, key: str, target: str, *init_args: Any) -> Worker:
        with self._workers_lock:  # the preload, the warm-up and visitors' runs may ask for the same one at once
            if self._closed:
                raise WorkerCrashed("The app is shutting down: no new worker starts.")
            worker = self._workers.get(key)
            if worker is None:
                worker = Worker(key, target, init_args=init_args, log_dir=self.log_dir, workdir=self._workdir(),
                                data_limit=self._data_limit())
                self._workers[key] = worker
            return worker

    @staticmethod
    def _data_limit() -> int | None:
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

    def preload(self, specs: tuple[BackendSpec, ...]) -> list[threading.Thread]:
        """Start, all at once, the environment probe, the preparer and the workers of ``specs`` with their heavy
        imports (`BackendHost.preload`). Each is mostly a single-threaded import chain (torch, transformers,
        onnxruntime: 5-10 s each), so on 2 cores they overlap with each other and with the first run's
        own steps, which then find them loaded (a call waits for its worker's preload). Returns the threads;
        a failure here is left for the run to meet and report."""
        def preparer() -> None:
            self._preparer().preload()

        def backend(spec: BackendSpec) -> None:
            host = self._backend_worker(spec)
            if not isinstance(host, zerogpu.GPUHost):  # there every call is a @spaces.GPU call: GPU quota
                host.preload()

        jobs = [self.environment, preparer, *(lambda spec=spec: backend(spec) for spec in specs)]
        threads = [threading.Thread(target=self._quietly, args=(job,), name="arena-preload", daemon=True)
                   for job in jobs]
        for thread in threads:
            thread.start()
        return threads

    @staticmethod
    def _quietly(job: Callable[[], Any]) -> None:
        try:
            job()
        except Exception:  # noqa: BLE001 - the run that needs it meets the same failure and reports it
            pass

    def _backend_worker(self, spec: BackendSpec) -> BackendHost:
        """The backend's worker, called like its `BackendHost` (`Hosted`: checked before anything is sent)."""
        # One process per backend and device: switching precision reloads, two devices do not fight.
        cls = self._backend_cls(spec.backend)
        if zerogpu.routed(cls, spec.options, self.environment()):  # ZeroGPU: PyTorch CUDA inside @spaces.GPU
            return zerogpu.GPUHost(self.backends[spec.backend], str(self.cache_dir))
        key = cls.worker_key(spec.options)
        # Only a backend with a "secret_env" option (a server's API key) gets secrets, in memory, never through
        # its environment; the others never hold one.
        wants = any(info.kind == "secret_env" for info in cls.Options.fields_info())
        worker = self._worker(key, "arena.running.host:BackendHost", self.backends[spec.backend],
                              str(self.cache_dir), secrets.known() if wants else {})
        return Hosted(worker, BackendHost, memory_limit=lambda args: self.memory_limit(
            spec.label, worker, parameters=getattr(args[0], "parameters", None) if args else None))

    def _preparer(self) -> Preparer:
        worker = self._worker("prepare", "arena.preparing.prepare:Preparer", str(self.cache_dir),
                              self.policy.public, self.policy.limits)
        return Hosted(worker, Preparer, memory_limit=lambda _args: self.memory_limit(
            "The preparation of the model", worker, preparation=True))

    def worker_pids(self) -> dict[str, int | None]:
        return {key: worker.pid for key, worker in list(self._workers.items())}

    def _prepare(self, request, progress: ProgressFn, deadline: float | None = None,
                 cancel: threading.Event | None = None):
        """The shared input of ``request`` (text or image, by its task), made in the preparation worker."""
        preparer = self._preparer()
        prepare = preparer.prepare_image if request.task == "image" else preparer.prepare_text
        return prepare(request, progress=progress, timeout=self._left(deadline, PREPARE_TIMEOUT_S), cancel=cancel,
                       token=self.hub_token(request.model, request.task == "image"))

    def hub_token(self, model: str, image: bool) -> str | bool | None:
        """The token a hub download of ``model`` may use. Public mode: the operator's token only for a gated
        catalog entry (the operator's own choice of model); a visitor's hub id, and every other catalog entry, is
        fetched anonymously (False: not even a `hf auth login` file). Locally: the user's own token."""
        if not self.policy.public:
            return secrets.hf_token()
        entry = find_image_catalog_model(model) if image else find_catalog_model(model)
        return (secrets.hf_token() or False) if entry is not None and entry.gated else False

    def prepare_text(self, request: TextRunRequest, progress: ProgressFn = _quiet) -> PreparedText:
        """Resolve the model and tokenize the prompt once (in the preparation worker)."""
        return self._prepare(request, progress)

    def prepare_image(self, request: ImageRunRequest, progress: ProgressFn = _quiet) -> PreparedImage:
        """Resolve the pipeline and draw the initial latents once (in the preparation worker)."""
        return self._prepare(request, progress)

    # --- runs ----------------------------------------------------------------------------------------
    def run_text(self, request: TextRunRequest, progress: ProgressFn = _quiet,
                 cancel: threading.Event | None = None, operator: bool = False) -> Iterator[TextRunResult]:
        """Yield the result after preparation and after each backend finishes (in request order).

        ``operator``: the server's own run (the start-up preparation): not gated, no time limit."""
        yield from self._run(request, TextRunResult, BackendTextResult, progress,
                             cancel, None if operator else self.policy.refuse_text)

    def run_image(self, request: ImageRunRequest, progress: ProgressFn = _quiet,
                  cancel: threading.Event | None = None, operator: bool = False) -> Iterator[ImageRunResult]:
        """Yield the image result after preparation and after each backend finishes (in request order)."""
        yield from self._run(request, ImageRunResult, BackendImageResult, progress,
                             cancel, None if operator else self.policy.refuse_image)

    def run_example(self, request, progress: ProgressFn = _quiet, cancel: threading.Event | None = None) -> Iterator:
        """An example's run (the server's own request, `arena.preparing.demos`): its last judged result from this
        server at once when there is one (``kept_at`` says when it ran; its inputs and models are fixed, so its
        verdicts are too), else run live and kept for the next visitor. Run it live: `run_text` / `run_image`."""
        import json

        key = json.dumps(request.to_dict(), sort_keys=True, default=str)
        with self._examples_lock:
            kept = self._kept_examples.get(key)
        if kept is not None:
            yield kept
            return
        final = None
        for final in (self.run_text if request.task == "text" else self.run_image)(request, progress, cancel):
            yield final
        if final is not None and not final.error and not final.phase and final.results \
                and all(r.verdict is not None for r in final.results):
            with self._examples_lock:
                self._kept_examples[key] = dataclasses.replace(final, kept_at=time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                              time.gmtime()))
                while len(self._kept_examples) > EXAMPLES_KEPT:
                    self._kept_examples.pop(next(iter(self._kept_examples)))

    def public_view(self, data: Any) -> Any:
        """A result dict as a visitor may see it (server paths and logs removed in public mode)."""
        return self.policy.redact(data, (str(self.cache_dir), str(Path(__file__).resolve().parent.parent)))

    @contextlib.contextmanager
    def stoppable(self, owner: str) -> Iterator[threading.Event]:
        """The stop signal for what ``owner`` (a browser session, an API client) runs inside this block."""
        event, ended = threading.Event(), threading.Event()
        self._cancels[owner] = (event, ended)
        try:
            yield event
        finally:
            ended.set()
            if self._cancels.get(owner, (None,))[0] is event:
                del self._cancels[owner]

    def stop(self, owner: str, wait_s: float = STOP_WAIT_S) -> bool | None:
        """Stop ``owner``'s run: its current worker (and any export it started) is killed at once.

        None: ``owner`` has no run. Else waits up to ``wait_s`` for the stopped run's block to end and says whether
        it did (True: the caller can start the next run at once; False: it is still unwinding, e.g. waiting for
        the cores). A second stop of the same run waits likewise. (The wait also keeps /stop from answering within
        a millisecond, which gradio_client 2.5 can lose: its SSE reader drops a completion that arrives before it
        registered the call.)"""
        entry = self._cancels.get(owner)
        if entry is None:
            return None
        event, ended = entry
        event.set()
        return ended.wait(wait_s)

    def _left(self, deadline: float | None, default: float) -> float:
        """Seconds a worker call may take: ``default``, or less when the run's time limit comes first."""
        return default if deadline is None else min(default, max(0.0, deadline - time.monotonic()))

    def _run(self, request, run_cls, result_cls, progress: ProgressFn,
             cancel: threading.Event | None, refuse):
        env = self.environment()
        if not request.backends:
            yield run_cls(request, None, error="Pick at least one backend to run.", environment=env)
            return
        # The public-mode gate (its caps are the tighter bounds), then the fields' own bounds (`arena.fields`):
        # before any worker or file is touched.
        problem = (refuse(request) if refuse else None) or request.refuse_bounds()
        if problem:
            yield run_cls(request, None, error=problem, environment=env)
            return
        limit = self.policy.limits.run_time_limit_s if self.policy.public and refuse else None
        deadline = None if limit is None else time.monotonic() + limit
        uses: set[str] = set()
        self._in_use[id(uses)] = uses
        try:
            with self._run_lock.visitor_run():
                for result in self._run_steps(request, run_cls, result_cls, progress, cancel, env, deadline, limit):
                    uses.update(self._folders(result))
                    yield result
        finally:
            self._in_use.pop(id(uses), None)
            # Public mode: the cache is brought under its cap after every run, finished, failed or stopped; what
            # another unfinished run uses stays.
            if self.policy.public:
                self.cache.clean_stale()
                in_use = set().union(*list(self._in_use.values()))
                self.cache.enforce_limit(self.policy.limits.max_cache_gb * 1e9, in_use=in_use)

    @staticmethod
    def _folders(result) -> set[str]:
        """The cache folders a (partial) run result names: its model and each backend's artifact."""
        found = {getattr(result.prepared, "model_dir", None)}
        found |= {getattr(r.load, "artifact_dir", None) for r in result.results if getattr(r, "load", None)}
        return {str(f) for f in found if f}

    def _run_steps(self, request, run_cls, result_cls, progress: ProgressFn,
                   cancel: threading.Event | None, env: dict[str, Any], deadline: float | None,
                   limit: float | None):
        progress(0.0, "Preparing the model and the shared input")
        if self._run_lock.locked():  # another run, or the start-up preparation, is using the cores
            progress(0.0, f"Waiting for {self.busy_with or 'the run before this one'} to finish (it prepares the same "
                          "cached models this run needs)" if self.busy_with else
                          "Waiting for the run before this one to finish")
        try:
            # The lock is held per step, never across a yield: an abandoned generator cannot block later runs,
            # and still no two timed runs ever share the cores.
            with self._run_lock:
                prepared = self._prepare(request, progress, deadline, cancel)
        except RunStopped:
            yield run_cls(request, None, error="Stopped by you while preparing the model.", environment=env)
            return
        except (WorkerFailed, WorkerCrashed, ArenaError) as exc:
            yield run_cls(request, None, error=self._over_time(exc, deadline, limit), environment=env)
            return
        try:
            reference = reference_index(request.reference, request.backends)
        except ValueError as exc:
            yield run_cls(request, prepared, (), error=str(exc), environment=env)
            return
        results: list = []
        loads: list = []  # what the machine did while each backend ran (`arena.running.load`)
        yield run_cls(request, prepared, tuple(results), environment=env, machine_load=tuple(loads))
        for spec in request.backends:
            for partial in self._run_streaming(spec, prepared, request, env, progress, result_cls, deadline, limit,
                                               cancel, results, loads):
                yield run_cls(request, prepared, tuple(results), environment=env, streaming=partial,
                              machine_load=tuple(loads))
            yield run_cls(request, prepared, tuple(results), environment=env, machine_load=tuple(loads))
        if cancel is not None and cancel.is_set():  # stopped: what finished stays, unjudged; nothing failed
            progress(None, "Stopped by you")
            yield run_cls(request, prepared, tuple(results), environment=env, phase="stopped",
                          machine_load=tuple(loads))
            return
        progress(None, "Judging the outputs")
        yield run_cls(request, prepared, tuple(results), environment=env, phase="judging", machine_load=tuple(loads))
        with self._run_lock:
            if prepared.task == "text":
                judged = self._judge_text(prepared, results, reference, progress, cancel, deadline)
                judged = self._localize(prepared, judged, reference, request, progress, cancel, deadline)
            else:
                judged = self._judge_image(prepared, results, reference, progress, cancel)
                judged = self._localize_image(prepared, judged, reference, request, progress, cancel, deadline)
                judged = [dataclasses.replace(r, latents=None) for r in judged]
        yield run_cls(request, prepared, tuple(judged), environment=env, machine_load=tuple(loads))

    def _run_streaming(self, spec: BackendSpec, prepared, request, env: dict[str, Any], progress: ProgressFn,
                       result_cls, deadline: float | None, limit: float | None, cancel: threading.Event | None,
                       results: list, loads: list) -> Iterator[dict[str, Any]]:
        """Run one backend (appending its result to ``results``) and yield its answer so far while it generates.

        The backend runs in a thread that holds the run lock; this generator never holds it across a yield, so a
        page that goes away mid-stream leaves nothing locked (the thread finishes or is stopped as usual)."""
        partials: queue.Queue = queue.Queue()

        last: dict[str, Any] = {}

        def relay(fraction: float | None, description: str, partial: Any = None) -> None:
            progress(fraction, description)
            if isinstance(partial, dict):
                last.update(partial)
                partials.put(partial)

        failure: list[BaseException] = []

        def work() -> None:
            try:
                with self._run_lock:
                    before = machine_sample()
                    results.append(self._run_one(spec, prepared, request, env, relay, result_cls, deadline, limit,
                                                 cancel))
                    loads.append(machine_between(before, machine_sample()))
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread below
                failure.append(exc)
            finally:
                partials.put(None)

        # The caller's context goes along: Gradio's progress tracker finds its event through context variables,
        # which a new thread would start without (its progress calls would then do nothing).
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(work,), name=f"arena-run-{spec.backend}", daemon=True)
        thread.start()
        while (partial := partials.get()) is not None:
            while not partials.empty() and partial is not None:  # a slow page gets the newest text, not a backlog
                partial = partials.get()
            if partial is None:
                break
            yield {"backend": spec.backend, "label": spec.label, **partial}
        thread.join()
        if failure:
            raise failure[0]
        if results and results[-1].stopped and last.get("text") and hasattr(results[-1], "text"):
            results[-1] = dataclasses.replace(results[-1], text=last["text"])  # what it wrote until the stop

    @staticmethod
    def _over_time(exc: Exception, deadline: float | None, limit: float | None) -> str:
        if deadline is not None and time.monotonic() >= deadline - 0.5 and isinstance(exc, WorkerCrashed):
            return f"Stopped: this run reached the server's time limit of {limit:g} s."
        return str(exc)

    def _judge_text(self, prepared: PreparedText, results: list, reference: int, progress,
                    cancel: threading.Event | None = None, deadline: float | None = None) -> list:
        """Verdicts for every text output: perplexity under the reference model (in the reference's worker,
        where that model already lives), first-step logits and tokens against the reference, and teacher-forced
        quality (`_quality`)."""
        ref = results[reference]
        nll: list = [None] * len(results)
        if ref.ok and not (cancel is not None and cancel.is_set()):
            ref_id, prompt = self._identity(prepared, ref), list(prepared.prompt_token_ids)
            keys = [("nll", ref_id, digest(prompt + list(r.token_ids))) if r.ok else None for r in results]
            nll = [self._judging_memo.get(key) for key in keys]
            todo = [list(r.token_ids) if r.ok and nll[i] is None else [] for i, r in enumerate(results)]
            if any(todo):
                try:
                    fresh = self._backend_worker(ref.spec).score_nll(
                        prepared, ref.spec, todo, progress=progress,
                        timeout=self._left(deadline, self.run_timeout_s), cancel=cancel)
                    for i, value in enumerate(fresh):
                        if todo[i]:
                            nll[i] = value
                            self._judging_memo.put(keys[i], value)
                except (WorkerCrashed, WorkerFailed):
                    pass  # judged without perplexity; the other detectors still run
        ref_precision, ref_class = self._precision(ref)
        ref_verdict = judge_text(ref.text, ref.token_ids, ref_precision, error=ref.error, is_reference=True,
                                 unk_token_id=prepared.unk_token_id, nll=nll[reference], precision_class=ref_class)
        # A reference that failed (an error, or nothing but special tokens) is no yardstick: the others are NOT
        # COMPARED. A gibberish reference is still one (the same model's math); its own verdict says what it is.
        ref_failed = f"{ref_verdict.kind}: {ref_verdict.reason}" if ref_verdict.kind in ("ERROR", "EMPTY") else None
        quality = self._quality(prepared, results, reference, progress, cancel, deadline) if ref.ok else {}
        decode = self._decode_path(prepared, results, reference, progress, cancel, deadline) if ref.ok else {}
        judged = []
        for i, r in enumerate(results):
            precision, precision_class = self._precision(r)
            verdict = ref_verdict if i == reference else judge_text(
                r.text, r.token_ids, precision, error=r.error,
                reference_ids=ref.token_ids if ref.ok else None, unk_token_id=prepared.unk_token_id, nll=nll[i],
                logits=logits_error(r.first_logits, ref.first_logits), quality=quality.get(i),
                reference_precision=ref_precision, reference_failed=ref_failed, precision_class=precision_class,
                decode=decode.get(i))
            if i == reference and quality.get(i):
                verdict = dataclasses.replace(verdict, metrics=verdict.metrics | {"quality": quality[i]})
            warnings = export_file_warnings(prepared.model_dir, r.load.artifact_dir if r.load else None)
            if warnings and i != reference:  # what deployment would do differently: beside the verdict, not in it
                verdict = dataclasses.replace(
                    verdict, reason=verdict.reason + "".join(f" Warning: {w}." for w in warnings),
                    metrics=verdict.metrics | {"warnings": warnings})
            judged.append(dataclasses.replace(r, verdict=verdict, first_logits=None))
        return judged

    @staticmethod
    def _precision(result) -> tuple[str, str]:
        """The precision a result is judged at, in its backend's words, and the class its backend maps it to
        (`Backend.tolerance_class`): what its loaded model really is (a user's export, a GGUF's type), else what
        its configuration says (`Backend.judged_precision`)."""
        cls = backend_class(result.spec.backend)
        detected = result.load.precision if result.load is not None else None
        precision = detected or cls.judged_precision(result.spec.options)
        return precision, cls.tolerance_class(precision)

    def forget_judging(self) -> None:
        """Drop the judging figures kept between runs (benchmarks measure judging from scratch)."""
        self._judging_memo = JudgingMemo()

    def _identity(self, prepared, result) -> str | None:
        """What a result's judging figures depend on (`arena.judging.memo.identity`)."""
        return memo_identity(result.spec, result.load, prepared.fingerprint)

    def _quality(self, prepared: PreparedText, results: list, reference: int, progress,
                 cancel: threading.Event | None = None, deadline: float | None = None) -> dict[int, dict]:
        """Teacher-forced quality of every backend against the reference, on the same tokens: the prompt followed
        by the reference's own answer, and the fixed paragraph (or the long reach). The reference's
        log-probabilities (positions x vocab, float32: ~20 MB per 100 positions of a 49k vocabulary) cross the
        pipes once to each candidate's worker, where the candidate's own distributions are compared; only the
        figures come back. Each sequence's figures are kept (`arena.judging.memo`): a repeated run teacher-forces
        only what it has not judged before with the same two models."""
        ref = results[reference]
        prompt = list(prepared.prompt_token_ids)
        sequences = [("output", prompt + list(ref.token_ids), len(prompt))] if ref.token_ids else []
        cached: dict[str, int] = {}
        if len(prepared.reach_token_ids) > 1:  # the long reach: the paragraph and the long text after it
            sequences.append((REACH_SEQUENCE, list(prepared.reach_token_ids), 1))
            cached[REACH_SEQUENCE] = REACH_CACHED_STEPS
        elif len(prepared.quality_token_ids) > 1:
            sequences.append(("paragraph", list(prepared.quality_token_ids), 1))
        if not sequences or (cancel is not None and cancel.is_set()):
            return {}
        ref_id = self._identity(prepared, ref)
        keys = {name: digest([start, *ids]) for name, ids, start in sequences}
        candidates = [i for i in reversed(range(len(results)))  # newest first: each worker holds its last model
                      if i != reference and results[i].ok]
        found: dict[int, dict[str, Any]] = {
            i: {name: self._judging_memo.get(("quality", self._identity(prepared, results[i]), ref_id, name,
                                              keys[name])) for name, _, _ in sequences} for i in candidates}
        own = {name: self._judging_memo.get(("self", ref_id, name, keys[name])) for name, _, _ in sequences}
        needed = [s for s in sequences if own[s[0]] is None or any(found[i][s[0]] is None for i in candidates)]
        out: dict[int, dict] = {}
        seconds: dict[int, float] = {}
        computed: dict[int, list[str]] = {}
        if needed:
            progress(None, "Teacher-forced quality against the reference")
        with self._scratch() as scratch:
            ref_lp: dict[str, Any] = {"sequences": [], "self_sequences": {}}
            if needed:
                ref_lp = self._reference_distributions(prepared, ref, needed, scratch, progress, cancel, deadline)
                if "unavailable" in ref_lp:  # the reference failed, or has no logits (a server)
                    return {i: dict(ref_lp) for i in range(len(results))}
                for name, figures in ref_lp["self_sequences"].items():
                    own[name] = figures
                    self._judging_memo.put(("self", ref_id, name, keys[name]), figures)
            for i in candidates:
                r = results[i]
                todo = [s for s in needed if found[i][s[0]] is None]
                if not todo:
                    continue
                computed[i] = [name for name, _, _ in todo]
                if cancel is not None and cancel.is_set():
                    return out
                try:
                    got = self._backend_worker(r.spec).quality_against(
                        prepared, r.spec, todo, ref_lp["sequences"], cached=cached, progress=progress,
                        timeout=self._left(deadline, self.run_timeout_s), cancel=cancel)
                except (WorkerCrashed, WorkerFailed) as exc:
                    got = {"unavailable": f"failed: {exc}"}
                if "unavailable" in got:
                    out[i] = got
                    continue
                seconds[i] = got.get("seconds", 0.0)
                for name, figures in got["sequences"].items():
                    found[i][name] = figures
                    self._judging_memo.put(("quality", self._identity(prepared, r), ref_id, name, keys[name]),
                                           figures)
        if all(own.values()):
            out[reference] = pool_summaries(own)
        for i in candidates:
            if i not in out and all(found[i].values()):
                reused = [name for name, _, _ in sequences if name not in computed.get(i, ())]
                out[i] = pool_summaries(found[i]) | {"sequences": found[i], "seconds": seconds.get(i, 0.0)} | (
                    {"reused": reused} if reused else {})
        return out

    def forget_reference_distributions(self) -> None:
        """Remove the reference's distributions kept between runs (`keep_reference_distributions`)."""
        if self._kept_dir is not None:
            import shutil

            shutil.rmtree(self._kept_dir, ignore_errors=True)
        self._kept_dir, self._kept_distributions = None, {}

    KEPT_DISTRIBUTION_BYTES = 600 * 2**20  # the reference's files kept between runs (the last ones used stay)

    def _reference_distributions(self, prepared: PreparedText, ref, sequences: list, scratch: str, progress,
                                 cancel: threading.Event | None, deadline: float | None) -> dict[str, Any]:
        """The reference's distributions over ``sequences``, written to ``scratch`` (`BackendHost.quality_reference`),
        or {"unavailable": why}. With ``keep_reference_distributions`` (local mode, a reference whose model is
        known: `arena.judging.memo`) the files are kept between runs under (the reference's identity, the sequence's
        token ids): a ``check`` of many candidates computes the reference's passes over the same tokens once."""
        ref_id = self._identity(prepared, ref) if self.keep_reference_distributions and not self.policy.public \
            else None
        if ref_id is None:
            return self._compute_reference_distributions(prepared, ref, sequences, scratch, progress, cancel,
                                                         deadline)
        keys = {name: (ref_id, digest([start, *ids])) for name, ids, start in sequences}
        missing = list({keys[s[0]]: s for s in sequences if keys[s[0]] not in self._kept_distributions}.values())
        if missing:
            found = self._compute_reference_distributions(prepared, ref, missing, scratch, progress, cancel,
                                                          deadline)
            if "unavailable" in found:
                return found
            if self._kept_dir is None or not os.path.isdir(self._kept_dir):
                import tempfile

                self._kept_dir = tempfile.mkdtemp(prefix=f".tmp-judging-kept-{os.getpid()}-",
                                                  dir=os.path.dirname(scratch))
            for name, path, positions in found["sequences"]:
                kept = os.path.join(self._kept_dir, f"{len(self._kept_distributions)}-{time.monotonic_ns()}-"
                                    f"{os.path.basename(path)}")
                os.replace(path, kept)  # the same folder's parent: a rename
                self._kept_distributions[keys[name]] = (kept, positions, found["self_sequences"].get(name))
        out: dict[str, Any] = {"sequences": [], "self_sequences": {}}
        used = []
        for name, _, _ in sequences:
            if keys[name] in self._kept_distributions:  # (a sequence too short to predict anything has no file)
                path, positions, figures = self._kept_distributions.pop(keys[name])
                self._kept_distributions[keys[name]] = (path, positions, figures)  # the last used go last
                used.append(keys[name])
                out["sequences"].append((name, path, positions))
                if figures is not None:
                    out["self_sequences"][name] = figures
        size = sum(os.path.getsize(path) for path, _, _ in self._kept_distributions.values())
        for key in list(self._kept_distributions):  # the least recently used go first; this run's stay
            if size <= self.KEPT_DISTRIBUTION_BYTES:
                break
            if key not in used:
                path = self._kept_distributions.pop(key)[0]
                size -= os.path.getsize(path)
                os.remove(path)
        return out

    def _compute_reference_distributions(self, prepared: PreparedText, ref, sequences: list, scratch: str,
                                         progress, cancel: threading.Event | None,
                                         deadline: float | None) -> dict[str, Any]:
        try:
            found = self._backend_worker(ref.spec).quality_reference(
                prepared, ref.spec, sequences, scratch, progress=progress,
                timeout=self._left(deadline, self.run_timeout_s), cancel=cancel)
        except (WorkerCrashed, WorkerFailed) as exc:
            return {"unavailable": f"the reference's distributions failed: {exc}"}
        if "unavailable" in found:
            return {"unavailable": f"the reference has {found['unavailable']}"}
        return found

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[str]:
        """A folder for one judging step's distributions (the reference's worker writes them, the candidates' read
        them: no distribution crosses the app), in the cache (a ``.tmp-`` folder: counted against its size cap, and
        removed by `ArtifactCache.clean_stale` if the app dies meanwhile)."""
        import shutil
        import tempfile

        parent = self.cache_dir / "judging"
        parent.mkdir(parents=True, exist_ok=True)
        folder = tempfile.mkdtemp(prefix=f".tmp-judging-{os.getpid()}-", dir=parent)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _decode_path(self, prepared: PreparedText, results: list, reference: int, progress,
                     cancel: threading.Event | None = None, deadline: float | None = None) -> dict[int, dict]:
        """Each candidate's own answer, judged along the path a deployment runs: the reference's full pass over the
        prompt and that answer (one call for every candidate), then each candidate's cached decode over the same
        tokens in its own worker (`BackendHost.decode_against`). Where the answers split, the reference's margin
        for its own token there says whether the split is a near-tie; it needs nothing from the candidate."""

        ref = results[reference]
        prompt = list(prepared.prompt_token_ids)
        todo = {i: list(r.token_ids) for i, r in enumerate(results)
                if i != reference and r.ok and r.token_ids and all(isinstance(t, int) and t >= 0
                                                                   for t in r.token_ids)}
        if not todo or (cancel is not None and cancel.is_set()):
            return {}
        ref_id = self._identity(prepared, ref)
        keys = {i: ("decode", self._identity(prepared, results[i]), ref_id, digest(prompt + ids),
                    digest(list(ref.token_ids))) for i, ids in todo.items()}
        out: dict[int, dict] = {}
        for i in list(todo):
            kept = self._judging_memo.get(keys[i])
            if kept is not None:
                out[i] = kept | {"reused": True}
                del todo[i]
        if not todo:
            return out
        progress(None, "The decode path: each candidate's own answer under the reference")
        sequences = [(str(i), prompt + ids, len(prompt)) for i, ids in todo.items()]
        from arena.judging.verdicts import load_distributions, reference_margin

        with self._scratch() as scratch:
            ref_lp = self._reference_distributions(prepared, ref, sequences, scratch, progress, cancel, deadline)
            if "unavailable" in ref_lp:
                return out | {i: dict(ref_lp) for i in todo}
            for name, path, positions in ref_lp["sequences"]:
                i = int(name)
                ids, ref_ids = todo[i], list(ref.token_ids)
                split = next((k for k, (a, b) in enumerate(zip(ids, ref_ids, strict=False)) if a != b), None)
                figures: dict[str, Any] = {}
                if split is not None and split < positions:
                    margin, best = reference_margin(load_distributions(path), split, ids[split])  # one row read
                    figures["split"] = {"step": split, "margin": margin, "reference_token": best, "token": ids[split]}
                if not (cancel is not None and cancel.is_set()):
                    try:
                        figures |= self._backend_worker(results[i].spec).decode_against(
                            prepared, results[i].spec, ids, path, progress=progress,
                            timeout=self._left(deadline, self.run_timeout_s), cancel=cancel)
                    except (WorkerCrashed, WorkerFailed) as exc:
                        figures["unavailable"] = f"failed: {exc}"
                    if "unavailable" not in figures:
                        self._judging_memo.put(keys[i], figures)
                out[i] = figures
        return out

    def _localize(self, prepared: PreparedText, results: list, reference: int, request, progress,
                  cancel: threading.Event | None = None, deadline: float | None = None) -> list:
        """Where did it break: for each candidate judged broken or DRIFT (``localize`` "auto"; "all": every
        candidate; "off": none),
        each unit's output over the prompt against the reference's (`arena.judging.localize`), kept in its
        verdict's metrics as ``where`` (None, with ``where_unavailable`` saying why, when it cannot be done)."""
        from arena.judging.localize import localize

        ref = results[reference]
        targets = [i for i, r in enumerate(results) if i != reference and r.ok and r.verdict is not None
                   and (request.localize == "all" or request.localize == "auto"
                        and (r.verdict.broken or r.verdict.kind == "DRIFT"))]
        if not targets or not ref.ok or (cancel is not None and cancel.is_set()):
            return results
        progress(None, "Where did it break: each layer's output against the reference")
        cap = self.policy.limits.max_localize_parameters
        if self.policy.public and (prepared.parameters or cap + 1) > cap:
            why = (f"this public server localizes models up to {cap / 1e6:.0f}M parameters (a second session of "
                   "the candidate runs beside it); run it locally with `python -m arena check --localize`")
            return [dataclasses.replace(r, verdict=dataclasses.replace(
                r.verdict, metrics=r.verdict.metrics | {"where": None, "where_unavailable": why}))
                if i in targets else r for i, r in enumerate(results)]

        def outputs(spec, units, token_ids=None, from_token=0):
            try:
                return self._backend_worker(spec).layer_outputs(
                    prepared, spec, units, token_ids=token_ids, from_token=from_token, progress=progress,
                    timeout=self._left(deadline, self.run_timeout_s), cancel=cancel)
            except (WorkerCrashed, WorkerFailed) as exc:
                return {"unavailable": f"{spec.label} failed to return its layers' outputs: {exc}"}

        over_prompt: list[dict] = []  # the reference's units over the prompt: computed once, when a target needs them

        def reference_out() -> dict:
            if not over_prompt:
                over_prompt.append(outputs(ref.spec, None))
            return over_prompt[0]

        out = list(results)
        for i in targets:
            r = results[i]
            metrics = r.verdict.metrics or {}
            late = self._onset_sequence(prepared, ref, metrics.get("onset"))
            if late is not None:  # a late onset: the units are compared from there on, where the math changes
                ids, first = late
                reference_seq = outputs(ref.spec, None, ids, first)
                found = reference_seq if "unavailable" in reference_seq else outputs(
                    r.spec, reference_seq["units"], ids, first)
                if "unavailable" in found:
                    extra = {"where": None, "where_unavailable": found["unavailable"]}
                else:
                    where = localize(reference_seq["outputs"], found["outputs"], reference_seq["units"],
                                     self._precision(r)[1])
                    extra = {"where": where | {"from": {"sequence": metrics["onset"]["sequence"],
                                                        "position": metrics["onset"]["position"]}}}
            else:
                mine = reference_out()
                found = mine if "unavailable" in mine else outputs(r.spec, mine["units"])
                if "unavailable" in found:
                    extra = {"where": None, "where_unavailable": found["unavailable"]}
                else:
                    extra = {"where": localize(mine["outputs"], found["outputs"], mine["units"],
                                               self._precision(r)[1])}
            problem = metrics.get("decode_problem") or {}
            if problem.get("full_agrees") and extra.get("where") and extra["where"]["unit"] is None:
                extra["where"] = extra["where"] | {  # every unit agrees on full passes: what differs is the cache
                    "unit": "the KV cache", "error": None, "cause": (
                        "every unit agrees with the reference on a full pass, and the cached decode leaves it at "
                        + (f"position {problem['position']} of the {problem['sequence']}" if "position" in problem
                           else f"step {problem['step']}")
                        + ": the cache (what the graph hands back as present.*, the positions or the attention mask "
                        "of a cached step, the past length)")}
            out[i] = dataclasses.replace(r, verdict=dataclasses.replace(r.verdict, metrics=r.verdict.metrics | extra))
        return out

    LATE_TAIL = 64  # tokens past a late onset that its localization compares

    def _onset_sequence(self, prepared: PreparedText, ref, onset: dict[str, Any] | None) -> tuple[list, int] | None:
        """(token ids, first token index to compare) for a late onset of the teacher-forced paragraph or answer."""
        if not onset or onset.get("kind") != "late":
            return None
        position = int(onset["position"])
        if onset.get("sequence") == "paragraph" and len(prepared.quality_token_ids) > 1:
            ids, first = list(prepared.quality_token_ids), position  # position k predicts token k + 1 from token k
        elif onset.get("sequence") == REACH_SEQUENCE and len(prepared.reach_token_ids) > 1:
            ids, first = list(prepared.reach_token_ids), position
        elif onset.get("sequence") == "output" and ref.token_ids:
            ids = list(prepared.prompt_token_ids) + list(ref.token_ids)
            first = len(prepared.prompt_token_ids) - 1 + position
        else:
            return None
        return ids[:first + self.LATE_TAIL + 1], first

    def _localize_image(self, prepared: PreparedImage, results: list, reference: int, request, progress,
                        cancel: threading.Event | None = None, deadline: float | None = None) -> list:
        """Where did an image break: for each candidate judged broken (``localize`` "auto"; "all": every candidate;
        "off": none), its text encoder, UNet and VAE decoder run on the reference's inputs to each
        (`arena.judging.localize_image`; the UNet at each kept denoising step of the reference's loop), kept in its
        verdict's metrics as ``where`` (None, with ``where_unavailable`` saying why, when it cannot be done). A run
        stopped by a NaN guard is localized too: its worker still holds the pipeline."""
        from arena.judging.localize_image import localize_components, unet_steps

        ref = results[reference]
        ref_precision = self._precision(ref)[0]
        # "auto": the broken, and every candidate at the reference's precision (its components have a floor:
        # `image_floor_verdict`, where a close picture can still hide a wrong component).
        targets = [i for i, r in enumerate(results) if i != reference and r.verdict is not None
                   and (r.ok or r.verdict.kind == "NAN")
                   and (request.localize == "all" or request.localize == "auto" and (
                       r.verdict.broken or self._precision(r)[0] == ref_precision))]
        if not targets or not ref.ok or (cancel is not None and cancel.is_set()):
            return results

        def unavailable(why: str) -> list:
            return [dataclasses.replace(r, verdict=dataclasses.replace(
                r.verdict, metrics=r.verdict.metrics | {"where": None, "where_unavailable": why}))
                if i in targets else r for i, r in enumerate(results)]

        cap = self.policy.limits.max_localize_parameters
        if self.policy.public:
            from arena.preparing.prepare import parameter_count

            counts = [parameter_count(Path(prepared.model_dir) / part) for part in ("text_encoder", "unet", "vae")]
            if None in counts or sum(counts) > cap:
                return unavailable(f"this public server localizes pipelines up to {cap / 1e6:.0f}M parameters (a "
                                   "second session of the candidate runs beside it); run it locally")
        progress(None, "Where did it break: the text encoder, UNet (at each denoising step) and VAE decoder on "
                       "the reference's inputs")

        def outputs(spec, inputs):
            try:
                return self._backend_worker(spec).image_component_outputs(
                    prepared, spec, request, inputs, progress=progress,
                    timeout=self._left(deadline, self.run_timeout_s), cancel=cancel)
            except (WorkerCrashed, WorkerFailed) as exc:
                return {"unavailable": f"{spec.label} failed to run its components: {exc}"}

        reference_out = outputs(ref.spec, None if ref.latents is None else {"final_latents": ref.latents})
        if "unavailable" in reference_out:
            return unavailable(f"the reference cannot: {reference_out['unavailable']}")
        if reference_out.get("errors"):
            return unavailable("the reference's own components failed: " + "; ".join(
                f"{name}: {why}" for name, why in reference_out["errors"].items()))
        out = list(results)
        for i in targets:
            r = results[i]
            found = outputs(r.spec, reference_out["inputs"])
            if "unavailable" in found:
                extra = {"where": None, "where_unavailable": found["unavailable"]}
            else:
                extra = {"where": localize_components(reference_out["outputs"], found["outputs"],
                                                      self._precision(r)[1], found.get("errors"),
                                                      image_broken=r.verdict.broken,
                                                      steps=unet_steps(reference_out["inputs"]))}
            verdict = dataclasses.replace(r.verdict, metrics=r.verdict.metrics | extra)
            precision, precision_class = self._precision(r)
            if precision == ref_precision:
                verdict = image_floor_verdict(verdict, extra["where"], precision, precision_class)
            out[i] = dataclasses.replace(r, verdict=verdict)
        return out

    @staticmethod
    def _judge_image(prepared: PreparedImage, results: list, reference: int, progress, cancel=None) -> list:
        ref = results[reference]
        judged = []
        for i, r in enumerate(results):
            precision, precision_class = Arena._precision(r)
            judged.append(dataclasses.replace(r, verdict=judge_image(
                r.image, precision, error=r.error, is_reference=i == reference,
                reference=ref.image if ref.ok else None, precision_class=precision_class)))
        return judged

    def _run_one(self, spec: BackendSpec, prepared, request, env: dict[str, Any], progress: ProgressFn,
                 result_cls, deadline: float | None = None, limit: float | None = None,
                 cancel: threading.Event | None = None):
        if cancel is not None and cancel.is_set():
            return result_cls(spec, error="Not run: you stopped the run.", stopped=True)
        if spec.backend not in self.backends:
            return result_cls(spec, error=f"Unknown backend '{spec.backend}'.")
        problem = zerogpu.check_spec(self._backend_cls(spec.backend), spec, env, request.task)
        if problem:
            return result_cls(spec, error=problem)
        if deadline is not None and time.monotonic() >= deadline:
            return result_cls(spec, error=f"Not run: this run reached the server's time limit of {limit:g} s.")
        try:
            host = self._backend_worker(spec)
            run = host.run_image if request.task == "image" else host.run_text
            return run(prepared, spec, request, progress=progress, timeout=self._left(deadline, self.run_timeout_s),
                       cancel=cancel)
        except RunStopped as exc:
            return result_cls(spec, error="Stopped by you.", log_tail=exc.log_tail, stopped=True)
        except (WorkerCrashed, WorkerFailed) as exc:
            return result_cls(spec, error=self._over_time(exc, deadline, limit), log_tail=exc.log_tail)

    def run_text_to_end(self, request: TextRunRequest, progress: ProgressFn = _quiet,
                        cancel: threading.Event | None = None, operator: bool = False) -> TextRunResult:
        """Run and return only the final result (API and CLI). Only the last result is kept: a run yields one per
        streamed piece of every answer."""
        final = None
        for final in self.run_text(request, progress, cancel, operator):  # noqa: B007 - the last one is the result
            pass
        return final

    def run_image_to_end(self, request: ImageRunRequest, progress: ProgressFn = _quiet,
                         cancel: threading.Event | None = None, operator: bool = False) -> ImageRunResult:
        final = None
        for final in self.run_image(request, progress, cancel, operator):  # noqa: B007 - the last one is the result
            pass
        return final

    def close(self) -> None:
        """Stop every worker (each unloads its model and exits), all at once; a run still going gets no new
        worker."""
        self._closed = True
        self.forget_reference_distributions()
        stopping = [threading.Thread(target=worker.stop, daemon=True) for worker in list(self._workers.values())]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join(15)
        self._workers.clear()
