"""Stopping a run: each owner (a browser session, an API client) holds one stop signal while its run's block lasts;
a Stop sets it, and the worker the run waits on is killed (`arena.running.workers.Worker.call` polls the signal)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

STOP_WAIT_S = 5.0  # how long Stop waits for the stopped run to end before it answers


class StopSignals:
    """{owner: (stop, ended)} for the runs under way."""

    def __init__(self) -> None:
        self._signals: dict[str, tuple[threading.Event, threading.Event]] = {}

    def __contains__(self, owner: str) -> bool:
        """Whether ``owner`` has a run under way (inside its `stoppable` block)."""
        return owner in self._signals

    @contextlib.contextmanager
    def stoppable(self, owner: str) -> Iterator[threading.Event]:
        """The stop signal for what ``owner`` (a browser session, an API client) runs inside this block."""
        event, ended = threading.Event(), threading.Event()
        self._signals[owner] = (event, ended)
        try:
            yield event
        finally:
            ended.set()
            if self._signals.get(owner, (None,))[0] is event:
                del self._signals[owner]

    def stop(self, owner: str, wait_s: float = STOP_WAIT_S) -> bool | None:
        """Stop ``owner``'s run: its current worker (and any export it started) is killed at once.

        None: ``owner`` has no run. Else waits up to ``wait_s`` for the stopped run's block to end and says whether
        it did (True: the caller can start the next run at once; False: it is still unwinding, e.g. waiting for
        the cores). A second stop of the same run waits likewise. (The wait also keeps /stop from answering within
        a millisecond, which gradio_client 2.5 can lose: its SSE reader drops a completion that arrives before it
        registered the call.)"""
        entry = self._signals.get(owner)
        if entry is None:
            return None
        event, ended = entry
        event.set()
        return ended.wait(wait_s)
