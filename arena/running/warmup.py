"""Start-up preparation: run the default models once in the background, so a visitor's first run is quick.

On a fresh Space the default LLM has to be fetched, materialized and exported (2-3 minutes) before anything can
be compared. `WarmUp` does that in a thread at start-up through the same core (and so the same worker processes
and cache) a visitor uses, and keeps a one-line status the page shows while it works.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from arena.preparing.catalog import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL, EXAMPLE_PROMPTS, IMAGE_EXAMPLE_PROMPTS
from arena.registry import DEFAULT_BACKENDS
from arena.running.runlock import BACKGROUND
from arena.tasks import TASKS, task_of
from arena.types import BackendSpec, ImageRunRequest, TextRunRequest

BACKENDS = tuple(BackendSpec(name) for name in DEFAULT_BACKENDS)  # what a visitor's first run compares


def default_requests() -> list:
    """The smallest runs that still download, materialize, export and load the default models."""
    return [
        TextRunRequest(model=DEFAULT_TEXT_MODEL, prompt=EXAMPLE_PROMPTS[0], backends=BACKENDS, max_new_tokens=2,
                       warmup=0),
        ImageRunRequest(model=DEFAULT_IMAGE_MODEL, prompt=IMAGE_EXAMPLE_PROMPTS[0], backends=BACKENDS, steps=2),
    ]


class WarmUp:
    """Runs ``requests`` once, one after the other, in a daemon thread; `status()` says how far it got."""

    def __init__(self, arena, requests: list | None = None, examples: bool | None = None,
                 report: Callable[[str], None] | None = None):
        self.arena = arena
        self.requests = default_requests() if requests is None else requests
        # The defaults also make the broken-conversion examples' exports (last: nobody waits for them).
        self.examples = requests is None if examples is None else examples
        self._report = report  # told every new status line (`python -m arena prepare` prints them)
        self._line = "Preparing the default models…"
        self.problems: list[str] = []
        self._done = threading.Event()
        self._first_done = threading.Event()  # the first request (the default text model) prepared, or failed
        self._thread = threading.Thread(target=self._work, name="arena-warm-up", daemon=True)

    def start(self) -> WarmUp:
        self._thread.start()
        return self

    def run(self) -> list[str]:
        """Prepare in this thread, to the end (`python -m arena prepare`); returns the problems met."""
        self._work()
        return self.problems

    @property
    def _line(self) -> str:
        return self.__line

    @_line.setter
    def _line(self, line: str) -> None:
        self.__line = line
        if self._report is not None:
            self._report(line)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def wait_first(self, timeout: float | None = None) -> bool:
        """Wait until the first request's models (the default text pair) are prepared and loaded."""
        return self._first_done.wait(timeout)

    def status(self) -> str:
        """One Markdown line: what is being prepared, or that the defaults are ready (with any problem)."""
        return self._line

    def _work(self) -> None:
        self.arena.busy_with = "the start-up preparation of the default models"
        token = BACKGROUND.set(True)  # a visitor's run goes first at every step (`arena.running.runlock.RunLock`)
        try:
            self._prepare()
        finally:
            BACKGROUND.reset(token)
            self.arena.busy_with = None
            self._first_done.set()
            self._done.set()

    def _prepare(self) -> None:
        start = time.monotonic()
        problems = []
        # Every worker the first runs need starts now, side by side (their imports overlap on the cores).
        self.arena.preload(tuple(dict.fromkeys(spec for request in self.requests for spec in request.backends)))
        for request in self.requests:
            what = request.task

            def progress(fraction, description, what=what):
                share = "" if fraction is None else f" ({fraction:.0%})"
                self._line = f"⏳ Preparing the default {what} model: {description}{share}"

            # The operator's own run: no public caps or time limit (a slow first export must be allowed to finish).
            run = task_of(request).step(self.arena, "run_{}_to_end")(request, progress, operator=True)
            errors = [run.error] if run.error else [f"{r.spec.label}: {r.error}" for r in run.results if r.error]
            problems += [f"{what}: {e}" for e in errors]
            self.problems = problems
            self._first_done.set()
        for task in TASKS if self.examples else ():
            def example_progress(_fraction, description, task=task):
                self._line = f"⏳ Preparing the broken {task} example: {description}"

            try:
                self.arena.demos.broken_export(task, example_progress)
            except Exception as exc:  # noqa: BLE001 - the example is made again on first use; say what happened
                problems.append(f"broken {task} example: {exc}")
                self.problems = problems
        took = time.monotonic() - start
        self._line = (f"✅ Default models ready (prepared at start-up in {took:.0f} s)." if not problems else
                      f"⚠️ Preparing the default models at start-up hit a problem: {'; '.join(problems)[:400]}")
