"""Start-up preparation: run the default models once in the background, so a visitor's first run is quick.

On a fresh Space the default LLM has to be fetched, materialized and exported (2-3 minutes) before anything can
be compared. `WarmUp` does that in a thread at start-up through the same core (and so the same worker processes
and cache) a visitor uses, and keeps a one-line status the page shows while it works.
"""

from __future__ import annotations

import threading
import time

from arena.preparing.catalog import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL, EXAMPLE_PROMPTS, IMAGE_EXAMPLE_PROMPTS
from arena.registry import DEFAULT_BACKENDS
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

    def __init__(self, arena, requests: list | None = None):
        self.arena = arena
        self.requests = default_requests() if requests is None else requests
        self.examples = requests is None  # the defaults also make the broken-conversion examples' exports
        self._line = "Preparing the default models…"
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._work, name="arena-warm-up", daemon=True)

    def start(self) -> WarmUp:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def status(self) -> str:
        """One Markdown line: what is being prepared, or that the defaults are ready (with any problem)."""
        return self._line

    def _work(self) -> None:
        self.arena.busy_with = "the start-up preparation of the default models"
        try:
            self._prepare()
        finally:
            self.arena.busy_with = None
            self._done.set()

    def _prepare(self) -> None:
        start = time.monotonic()
        problems = []
        for request in self.requests:
            what = "text" if isinstance(request, TextRunRequest) else "image"

            def progress(fraction, description, what=what):
                share = "" if fraction is None else f" ({fraction:.0%})"
                self._line = f"⏳ Preparing the default {what} model: {description}{share}"

            # The operator's own run: no public caps or time limit (a slow first export must be allowed to finish).
            run = (self.arena.run_text_to_end if what == "text" else self.arena.run_image_to_end)(
                request, progress, operator=True)
            errors = [run.error] if run.error else [f"{r.spec.label}: {r.error}" for r in run.results if r.error]
            problems += [f"{what}: {e}" for e in errors]
        for task in ("text", "image") if self.examples else ():
            def example_progress(_fraction, description, task=task):
                self._line = f"⏳ Preparing the broken {task} example: {description}"

            try:
                self.arena.demos.broken_export(task, example_progress)
            except Exception as exc:  # noqa: BLE001 - the example is made again on first use; say what happened
                problems.append(f"broken {task} example: {exc}")
        took = time.monotonic() - start
        self._line = (f"✅ Default models ready (prepared at start-up in {took:.0f} s)." if not problems else
                      f"⚠️ Preparing the default models at start-up hit a problem: {'; '.join(problems)[:400]}")
