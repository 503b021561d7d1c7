"""The run lock: one step of one run at a time on the cores, and visitors' runs before background work (the start-up
preparation, `arena.running.warmup`)."""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator

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
