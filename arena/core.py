"""The arena core: takes a `TextRunRequest`, prepares the shared input once, runs the backends one after
another in their worker processes and yields the growing `TextRunResult`. No heavy imports here."""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from arena.errors import ArenaError
from arena.judging.stage import JudgingStage
from arena.judging.verdicts import reference_index
from arena.preparing.cache import ArtifactCache, default_cache_dir
from arena.preparing.demos import BrokenConversions
from arena.preparing.prepare import Preparer
from arena.public import secrets
from arena.public.policy import Policy
from arena.registry import BACKENDS, backend_class, register
from arena.running import zerogpu
from arena.running.environment import probe_environment
from arena.running.estimate import RunEstimates
from arena.running.host import BackendHost
from arena.running.pool import WorkerPool
from arena.running.runlock import RunLock
from arena.running.stops import STOP_WAIT_S, StopSignals
from arena.running.stream import BackendRunner, over_time
from arena.running.workers import Hosted, RunStopped, WorkerCrashed, WorkerFailed
from arena.sharing.history import RunHistory
from arena.tasks import task_of
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


def _quiet(_fraction: float | None, _description: str) -> None:
    pass


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
        self.stops = StopSignals()  # each browser session's or API client's run, and its Stop
        self._environment = environment
        self._env_lock = threading.Lock()
        self._run_lock = RunLock()
        self.workers = WorkerPool(self.log_dir, self.policy)  # the worker processes, and each call's memory
        # The judging stage reaches each backend's worker through this core, and nothing else of it.
        self.judging = JudgingStage(lambda spec: self._backend_worker(spec),
                                    lambda deadline: self._left(deadline, self.run_timeout_s),
                                    self.policy, self.cache_dir / "judging")
        self.estimates = RunEstimates(self.policy)  # the line under the prompt, the prefill's time
        # What holds the run lock when it is not a visitor's run ("the start-up preparation of the default models",
        # `arena.running.warmup`): a run that has to wait says what it waits for.
        self.busy_with: str | None = None
        # Folders each unfinished run uses (its model, its backends' artifacts): the cache's eviction after another
        # visitor's run leaves them alone (runs hold the run lock per step, so another run ends between two steps).
        self._in_use: dict[int, set[str]] = {}
        self.backends = dict(BACKENDS) | dict(extra_backends or {})
        for name, target in (extra_backends or {}).items():
            register(name, target)
        # Each backend of a run, in a thread holding the run lock, its answer streamed while it generates.
        self.runner = BackendRunner(lambda spec: self._backend_worker(spec),
                                    lambda name: self._backend_cls(name) if name in self.backends else None,
                                    lambda deadline: self._left(deadline, self.run_timeout_s), self._run_lock,
                                    self.estimates)
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
        worker = self.workers.get(key, "arena.running.host:BackendHost", self.backends[spec.backend],
                                  str(self.cache_dir), secrets.known() if wants else {})
        return Hosted(worker, BackendHost, memory_limit=lambda args: self.workers.memory_limit(
            spec.label, worker, parameters=getattr(args[0], "parameters", None) if args else None))

    def _preparer(self) -> Preparer:
        worker = self.workers.get("prepare", "arena.preparing.prepare:Preparer", str(self.cache_dir),
                                  self.policy.public, self.policy.limits)
        return Hosted(worker, Preparer, memory_limit=lambda _args: self.workers.memory_limit(
            "The preparation of the model", worker, preparation=True))

    def worker_pids(self) -> dict[str, int | None]:
        return self.workers.pids()

    def _prepare(self, request, progress: ProgressFn, deadline: float | None = None,
                 cancel: threading.Event | None = None):
        """The shared input of ``request`` (text or image, by its task), made in the preparation worker."""
        prepare = task_of(request).step(self._preparer(), "prepare_{}")
        return prepare(request, progress=progress, timeout=self._left(deadline, PREPARE_TIMEOUT_S), cancel=cancel,
                       token=self.hub_token(request.model, request.task))

    def hub_token(self, model: str, task: str = "text") -> str | bool | None:
        """The token a hub download of ``model`` may use. Public mode: the operator's token only for a gated
        catalog entry (the operator's own choice of model); a visitor's hub id, and every other catalog entry, is
        fetched anonymously (False: not even a `hf auth login` file). Locally: the user's own token."""
        if not self.policy.public:
            return secrets.hf_token()
        entry = task_of(task).find_model(model)
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
        """An example's run: its last judged result from this server at once when there is one, else run live and
        kept (`BrokenConversions.run_example`)."""
        return self.demos.run_example(request, progress, cancel)

    def public_view(self, data: Any) -> Any:
        """A result dict as a visitor may see it (server paths and logs removed in public mode)."""
        return self.policy.redact(data, (str(self.cache_dir), str(Path(__file__).resolve().parent.parent)))

    def stoppable(self, owner: str) -> contextlib.AbstractContextManager[threading.Event]:
        """The stop signal for what ``owner`` (a browser session, an API client) runs inside this block
        (`StopSignals.stoppable`)."""
        return self.stops.stoppable(owner)

    def stop(self, owner: str, wait_s: float = STOP_WAIT_S) -> bool | None:
        """Stop ``owner``'s run: its current worker (and any export it started) is killed at once. None: ``owner``
        has no run; else whether its block ended within ``wait_s`` (`StopSignals.stop`)."""
        return self.stops.stop(owner, wait_s)

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
            yield run_cls(request, None, error=over_time(exc, deadline, limit), environment=env)
            return
        try:
            reference = reference_index(request.reference, request.backends)
        except ValueError as exc:
            yield run_cls(request, prepared, (), error=str(exc), environment=env)
            return
        task = task_of(prepared)
        if task.streams_text:  # the prompt estimate counts its tokens with this model's tokenizer
            self.estimates.resolved(request.model, prepared.model_dir)
        results: list = []
        loads: list = []  # what the machine did while each backend ran (`arena.running.load`)
        yield run_cls(request, prepared, tuple(results), environment=env, machine_load=tuple(loads))
        for spec in request.backends:
            for partial in self.runner.stream(spec, prepared, request, env, progress, result_cls, deadline, limit,
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
            judged = task.step(self.judging)(prepared, results, reference, request, progress, cancel, deadline,
                                             tolerances=tolerances)
        if task.streams_text:  # its rates: time to first token and per new token
            self.estimates.remember(request, prepared, judged)
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

    def prompt_estimate(self, model: str, prompt: str, max_new_tokens: int | None, backends: list[str]) -> str:
        """One line under the prompt: its token count and the time each ticked backend will take
        (`RunEstimates.prompt_line`)."""
        return self.estimates.prompt_line(model, prompt, max_new_tokens, backends)

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
        self.workers.close()
        self.judging.forget_reference_distributions()
