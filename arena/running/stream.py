"""One backend of a run: run in a thread that holds the run lock, its answer streamed to the caller while it
generates, its result (or the sentence its failure becomes) appended to the run's."""

from __future__ import annotations

import contextvars
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from arena.running import zerogpu
from arena.running.load import between as machine_between
from arena.running.load import sample as machine_sample
from arena.running.workers import RunStopped, WorkerCrashed, WorkerFailed
from arena.tasks import task_of

ProgressFn = Callable[[float | None, str], None]


def over_time(exc: Exception, deadline: float | None, limit: float | None) -> str:
    """A worker's failure as said to the user: a crash at the run's deadline is the server's time limit."""
    if deadline is not None and time.monotonic() >= deadline - 0.5 and isinstance(exc, WorkerCrashed):
        return f"Stopped: this run reached the server's time limit of {limit:g} s."
    return str(exc)


class BackendRunner:
    """Runs one backend of a run for the core, which hands it ``host(spec)`` (the backend's worker, called like its
    `BackendHost`), ``backend_cls(name)`` (None for a name the core does not know), ``time_left(deadline)`` (the
    seconds a worker call may take), the run lock and the run estimates (the prefill line's guess)."""

    def __init__(self, host: Callable[[Any], Any], backend_cls: Callable[[str], Any],
                 time_left: Callable[[float | None], float], lock, estimates) -> None:
        self._host, self._backend_cls, self._time_left = host, backend_cls, time_left
        self._run_lock, self.estimates = lock, estimates

    def stream(self, spec, prepared, request, env: dict[str, Any], progress: ProgressFn,
               result_cls, deadline: float | None, limit: float | None, cancel: threading.Event | None,
               results: list, loads: list) -> Iterator[dict[str, Any]]:
        """Run one backend (appending its result to ``results``) and yield its answer so far while it generates.

        The backend runs in a thread that holds the run lock; this generator never holds it across a yield, so a
        page that goes away mid-stream leaves nothing locked (the thread finishes or is stopped as usual)."""
        partials: queue.Queue = queue.Queue()

        last: dict[str, Any] = {}
        said: list = [None, f"{spec.label}: starting"]  # the last (fraction, description), said again each second
        guess = self.estimates.prefill(request.model, spec.backend, len(getattr(prepared, "prompt_token_ids", ())))

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
                    results.append(self.run_one(spec, prepared, request, env, relay, result_cls, deadline, limit,
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

    def run_one(self, spec, prepared, request, env: dict[str, Any], progress: ProgressFn,
                result_cls, deadline: float | None = None, limit: float | None = None,
                cancel: threading.Event | None = None):
        """One backend's result, or why it did not run: stopped, unknown, refused here, or past the deadline."""
        if cancel is not None and cancel.is_set():
            return result_cls(spec, error="Not run: you stopped the run.", stopped=True)
        cls = self._backend_cls(spec.backend)
        if cls is None:
            return result_cls(spec, error=f"Unknown backend '{spec.backend}'.")
        problem = zerogpu.check_spec(cls, spec, env, request.task)
        if problem:
            return result_cls(spec, error=problem)
        if deadline is not None and time.monotonic() >= deadline:
            return result_cls(spec, error=f"Not run: this run reached the server's time limit of {limit:g} s.")
        try:
            host = self._host(spec)
            run = task_of(request).step(host, "run_{}")
            return run(prepared, spec, request, progress=progress, timeout=self._time_left(deadline),
                       cancel=cancel)
        except RunStopped as exc:
            return result_cls(spec, error="Stopped by you.", log_tail=exc.log_tail, stopped=True)
        except (WorkerCrashed, WorkerFailed) as exc:
            return result_cls(spec, error=over_time(exc, deadline, limit), log_tail=exc.log_tail)
