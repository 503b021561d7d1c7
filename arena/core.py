"""The arena core: takes a `TextRunRequest`, prepares the shared input once, runs the backends one after
another in their worker processes and yields the growing `TextRunResult`. No heavy imports here."""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from arena.errors import ArenaError
from arena.judging.stage import JudgingStage
from arena.judging.verdicts import reference_index
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
        # The judging stage reaches each backend's worker through this core, and nothing else of it.
        self.judging = JudgingStage(lambda spec: self._backend_worker(spec),
                                    lambda deadline: self._left(deadline, self.run_timeout_s),
                                    self.policy, self.cache_dir / "judging")
        self._kept_examples: dict[str, Any] = {}  # the examples' last judged results (`run_example`)
        # What the last finished text runs measured, for the estimate under the prompt and the prefill line
        # (`prompt_estimate`): {(model, backend): (time to first token s, its prompt's tokens, s per new token)},
        # and the folder each model resolved to (its tokenizer.json counts a prompt's tokens).
        self._rates: dict[tuple[str, str], tuple[float, int, float]] = {}
        self._model_dirs: dict[str, str] = {}
        self._counters: dict[str, Any] = {}
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
                 cancel: threading.Event | None = None, operator: bool = False,
                 tolerances: dict | None = None) -> Iterator[TextRunResult]:
        """Yield the result after preparation and after each backend finishes (in request order).

        ``operator``: the server's own run (the start-up preparation): not gated, no time limit. ``tolerances``:
        judged with these in place of the tables' (`arena.judging.verdicts.tolerance_overrides`; a check's)."""
        yield from self._run(request, TextRunResult, BackendTextResult, progress,
                             cancel, None if operator else self.policy.refuse_text, tolerances)

    def run_image(self, request: ImageRunRequest, progress: ProgressFn = _quiet,
                  cancel: threading.Event | None = None, operator: bool = False,
                  tolerances: dict | None = None) -> Iterator[ImageRunResult]:
        """Yield the image result after preparation and after each backend finishes (in request order)."""
        yield from self._run(request, ImageRunResult, BackendImageResult, progress,
                             cancel, None if operator else self.policy.refuse_image, tolerances)

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
             cancel: threading.Event | None, refuse, tolerances: dict | None = None):
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
                for result in self._run_steps(request, run_cls, result_cls, progress, cancel, env, deadline, limit,
                                              tolerances):
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
                   limit: float | None, tolerances: dict | None = None):
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
        if prepared.task == "text":
            self._model_dirs[request.model] = prepared.model_dir
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
            judge = self.judging.text if prepared.task == "text" else self.judging.image
            judged = judge(prepared, results, reference, request, progress, cancel, deadline, tolerances=tolerances)
        if prepared.task == "text":
            self._remember_rates(request, prepared, judged)
        yield run_cls(request, prepared, tuple(judged), environment=env, machine_load=tuple(loads))

    def exclusive(self) -> RunLock:
        """The lock every timed step holds (``with arena.exclusive():``): work that uses the cores outside a run
        (the examples' exports) holds it too, so no timing shares them."""
        return self._run_lock

    @property
    def keep_reference_distributions(self) -> bool:
        """Keep the reference's teacher-forced distributions between runs (`JudgingStage`): on for one caller
        running many checks of one reference (`python -m arena check` with several candidates), never in public
        mode."""
        return self.judging.keep_reference_distributions

    @keep_reference_distributions.setter
    def keep_reference_distributions(self, keep: bool) -> None:
        self.judging.keep_reference_distributions = keep

    def forget_reference_distributions(self) -> None:
        self.judging.forget_reference_distributions()

    def forget_judging(self) -> None:
        """Drop the judging figures kept between runs (benchmarks measure judging from scratch)."""
        self.judging.forget()

    def _remember_rates(self, request, prepared, results) -> None:
        """Each finished backend's prefill time per prompt token and time per new token, for the next estimate."""
        prompt_tokens = max(1, len(prepared.prompt_token_ids))
        for result in results:
            timings = getattr(result, "timings", None)
            if result.error or timings is None or not timings.ttft_s:
                continue
            per_token = 1.0 / timings.decode_tokens_per_s if timings.decode_tokens_per_s else timings.ttft_s
            self._rates[(request.model, result.spec.backend)] = (timings.ttft_s, prompt_tokens, per_token)

    def prompt_estimate(self, model: str, prompt: str, max_new_tokens: int | None, backends: list[str]) -> str:
        """One line under the prompt: its token count (exact with the model's tokenizer.json once a run has
        resolved the model; else about 4 characters a token) and, from the last runs of this model here, the
        time each ticked backend will take (prefill grows with the prompt: a linear guess is a lower bound)."""
        prompt = prompt or ""
        if not prompt.strip():
            return ""
        count, exact = self._count_tokens(model, prompt)
        line = (f"**{count:,} tokens** in the prompt (before its chat template)" if exact else
                f"**about {count:,} tokens** in the prompt ({len(prompt):,} characters at ~4 a token; counted "
                "exactly once a run has loaded this model)")
        guesses = []
        for name in backends:
            rate = self._rates.get((model, name))
            if rate is not None and max_new_tokens:
                seconds = self.prefill_estimate(model, name, count) + rate[2] * max_new_tokens
                guesses.append(f"{name} ~{seconds:,.0f} s" if seconds >= 1 else f"{name} <1 s")
        if guesses:
            line += (" · to generate, from this server's last runs of this model: " + ", ".join(guesses)
                     + " (plus loading and judging)")
        return line

    def _count_tokens(self, model: str, prompt: str) -> tuple[int, bool]:
        """(tokens, exact): the prompt counted by the model's own tokenizer.json (`tokenizers`, no torch) when a
        run resolved the model already (a public server: its own catalog models only, a visitor's tokenizer is
        not parsed in this process); else a character estimate."""
        estimate = (max(1, round(len(prompt) / 4)), False)
        folder = self._model_dirs.get(model)
        if folder is None or len(prompt) > 200_000 or (self.policy.public and find_catalog_model(model) is None):
            return estimate
        counter = self._counters.get(folder)
        if counter is None:
            try:
                from tokenizers import Tokenizer

                counter = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
            except Exception:  # noqa: BLE001 - no tokenizer.json (a GGUF's or an old format): estimate
                counter = False
            self._counters[folder] = counter
        if not counter:
            return estimate
        return len(counter.encode(prompt, add_special_tokens=False).ids), True

    def prefill_estimate(self, model: str, backend: str, prompt_tokens: int) -> float | None:
        """The last time to first token of ``backend`` on ``model`` here, scaled by the prompt's length when this
        one is longer (attention makes it grow faster still: a lower bound), not shrunk when it is shorter (a
        short prompt's first token is mostly fixed costs)."""
        rate = self._rates.get((model, backend))
        return None if rate is None else rate[0] * max(1.0, prompt_tokens / rate[1])

    def _run_streaming(self, spec: BackendSpec, prepared, request, env: dict[str, Any], progress: ProgressFn,
                       result_cls, deadline: float | None, limit: float | None, cancel: threading.Event | None,
                       results: list, loads: list) -> Iterator[dict[str, Any]]:
        """Run one backend (appending its result to ``results``) and yield its answer so far while it generates.

        The backend runs in a thread that holds the run lock; this generator never holds it across a yield, so a
        page that goes away mid-stream leaves nothing locked (the thread finishes or is stopped as usual)."""
        partials: queue.Queue = queue.Queue()

        last: dict[str, Any] = {}
        said: list = [None, f"{spec.label}: starting"]  # the last (fraction, description), said again each second
        guess = self.prefill_estimate(request.model, spec.backend, len(getattr(prepared, "prompt_token_ids", ())))

        def relay(fraction: float | None, description: str, partial: Any = None) -> None:
            if guess is not None and description.endswith("prompt tokens"):
                description += f" (about {guess:,.0f} s at this server's last rate)" if guess >= 1 else ""
            said[:] = [fraction, description]
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
        while True:
            try:
                partial = partials.get(timeout=1.0)
            except queue.Empty:  # a long step (a prefill, a load): the same line again, so the run clock moves
                progress(*said)
                continue
            if partial is None:
                break
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
                        cancel: threading.Event | None = None, operator: bool = False,
                        tolerances: dict | None = None) -> TextRunResult:
        """Run and return only the final result (API and CLI). Only the last result is kept: a run yields one per
        streamed piece of every answer."""
        final = None
        for final in self.run_text(request, progress, cancel, operator, tolerances):  # noqa: B007 - the last one
            pass
        return final

    def run_image_to_end(self, request: ImageRunRequest, progress: ProgressFn = _quiet,
                         cancel: threading.Event | None = None, operator: bool = False,
                         tolerances: dict | None = None) -> ImageRunResult:
        final = None
        for final in self.run_image(request, progress, cancel, operator, tolerances):  # noqa: B007 - the last one
            pass
        return final

    def close(self) -> None:
        """Stop every worker (each unloads its model and exits), all at once; a run still going gets no new
        worker."""
        self._closed = True
        self.judging.forget_reference_distributions()
        stopping = [threading.Thread(target=worker.stop, daemon=True) for worker in list(self._workers.values())]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join(15)
        self._workers.clear()
