"""Every finished run, kept so it can be compared with another and run again.

Locally each run is one JSON file under ``<cache>/history`` (the newest ``limit`` are kept, the oldest dropped).
In public mode nothing is written to the shared disk: runs live in memory, per browser session, so one visitor
never sees another's runs. Pure stdlib; what is kept is the result dict as its owner saw it (the public view).

A kept run's id ends in 64 random bits (`secrets`), so it can stand in a link (``?run=<id>``) that opens the result
with its verdicts for whoever holds the link, and cannot be guessed by anyone else (`find`). In public mode the
linked copies live in one bounded store beside the sessions (`SHARED_LIMIT` runs, `SHARED_MAX_BYTES` together,
the oldest dropped first): a link outlives the page that made it, not the server, nor hundreds of later runs.
An image run keeps its pictures (PNG) beside its JSON (locally ``<id>.<n>.png``; in public mode in memory).
"""

from __future__ import annotations

import io
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from arena.tasks import task_of

HISTORY_LIMIT = 100
MAX_SESSIONS = 256  # public mode: sessions kept in memory (least recently active dropped first)
SHARED_LIMIT = 128  # public mode: runs a link can open (the newest; each also bounded by max_entry_bytes)
SHARED_MAX_BYTES = 48_000_000  # public mode: those runs' JSON and pictures together
# "20261207-211502123456-" then 16 hex digits of `secrets`: a link names a run by it, never by a path.
ENTRY_ID = re.compile(r"^\d{8}-\d{12}-[0-9a-f]{16}$")


@dataclass(frozen=True)
class HistoryEntry:
    """One kept run: when, which task, and the result dict (request, results, verdicts, environment)."""

    id: str
    created: str  # local time, "YYYY-MM-DD HH:MM:SS"
    task: str  # "text" | "image"
    run: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The row of the history table: time, task, model, prompt excerpt, backends with verdicts, speed."""
        request, results = self.run.get("request") or {}, self.run.get("results") or []
        prompt = request.get("prompt", "")
        verdicts = ", ".join(f"{r.get('label')}: {_kind(r)}" for r in results) or (self.run.get("error") or "–")
        speeds = []
        for r in results:
            t = r.get("timings") or {}
            if task_of(self.task).streams_text and t.get("tokens_per_s"):
                speeds.append(f"{t['tokens_per_s']:.1f} tok/s")
            elif t.get("total_s"):
                speeds.append(f"{t['total_s']:.2f} s")
        busy = " (busy machine)" if self.run.get("busy_machine") else ""
        return {"id": self.id, "time": self.created, "task": self.task, "model": request.get("model", ""),
                "prompt": prompt if len(prompt) <= 60 else prompt[:57] + "…", "backends": verdicts,
                "speed": (" / ".join(speeds) or "–") + busy}

    def title(self) -> str:
        """For a dropdown: "10:02:11 · text · smollm2-135m-instruct · Why should one… · 1 MATCH, 1 GIBBERISH":
        two runs of the same prompt still read apart by their verdicts."""
        row = self.summary()
        counts: dict[str, int] = {}
        for result in self.run.get("results") or []:
            counts[_kind(result)] = counts.get(_kind(result), 0) + 1
        verdicts = ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "error"
        return f"{row['time'][11:]} · {row['task']} · {row['model']} · {row['prompt'][:30]} · {verdicts}"


def fit(run: dict[str, Any], max_bytes: int | None) -> dict[str, Any]:
    """``run`` with its longest strings cut until its JSON takes at most ``max_bytes`` (None: unchanged)."""
    if max_bytes is None:
        return run
    cap = 1 << 16
    while len(json.dumps(run)) > max_bytes and cap >= 16:
        run = _cut_strings(run, cap)
        cap //= 4
    return run


def _cut_strings(value: Any, cap: int) -> Any:
    if isinstance(value, dict):
        return {k: _cut_strings(v, cap) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_strings(v, cap) for v in value[:cap]]
    if isinstance(value, str) and len(value) > cap:
        return value[:cap] + f"… ({len(value):,} characters)"
    return value


def _kind(result: dict[str, Any]) -> str:
    return (result.get("verdict") or {}).get("kind") or ("ERROR" if result.get("error") else "–")


class RunHistory:
    """Kept runs, newest first. ``directory`` None: in memory per owner (public mode); else one JSON file per run
    (one local user: ``owner`` is ignored)."""

    def __init__(self, directory: str | Path | None, limit: int = HISTORY_LIMIT, max_sessions: int = MAX_SESSIONS,
                 max_entry_bytes: int | None = None, max_session_bytes: int | None = None):
        self.directory = Path(directory) if directory else None
        self.limit = limit
        self.max_sessions = max_sessions
        # Public mode: memory is bounded by entries x size, not by what visitors send (a 20 MB prompt).
        self.max_entry_bytes = max_entry_bytes
        self.max_session_bytes = max_session_bytes
        self._memory: OrderedDict[str, list[HistoryEntry]] = OrderedDict()
        # Public mode: what a link can open, by id: (entry, its pictures as PNG bytes, their size in bytes).
        self._shared: OrderedDict[str, tuple[HistoryEntry, list[bytes | None], int]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, owner: str, task: str, run: dict[str, Any], images: list | None = None) -> HistoryEntry:
        """Keep a finished run (and an image run's pictures, one per result: an array or None); the oldest go
        when there are more than ``limit``."""
        stamp = time.time()
        # Sortable by time to the microsecond; the random tail keeps two processes' ids apart and makes the id
        # a link's secret.
        entry = HistoryEntry(id=time.strftime("%Y%m%d-%H%M%S", time.localtime(stamp))
                             + f"{int(stamp * 1e6) % 1_000_000:06d}-{secrets.token_hex(8)}",
                             created=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)), task=task,
                             run=fit(json.loads(json.dumps(run, default=str)), self.max_entry_bytes))
        pictures = [_png(image) for image in images or []]
        with self._lock:
            if self.directory is None:
                size = len(json.dumps(entry.run)) + sum(len(p or b"") for p in pictures)
                self._shared[entry.id] = (entry, pictures, size)
                while len(self._shared) > 1 and (len(self._shared) > SHARED_LIMIT or sum(
                        v[2] for v in self._shared.values()) > SHARED_MAX_BYTES):
                    self._shared.popitem(last=False)
                runs = self._memory.pop(owner, [])
                runs.insert(0, entry)
                runs = runs[:self.limit]
                if self.max_session_bytes is not None:
                    sizes = [len(json.dumps(e.run)) for e in runs]
                    while len(runs) > 1 and sum(sizes) > self.max_session_bytes:
                        runs.pop()
                        sizes.pop()
                self._memory[owner] = runs
                while len(self._memory) > self.max_sessions:
                    self._memory.popitem(last=False)
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
                tmp = self.directory / f".{entry.id}.tmp"
                tmp.write_text(json.dumps(entry.to_dict()))
                for n, picture in enumerate(pictures):
                    if picture is not None:
                        (self.directory / f"{entry.id}.{n}.png").write_bytes(picture)
                tmp.rename(self.directory / f"{entry.id}.json")
                for old in sorted(self.directory.glob("*.json"))[:-self.limit]:
                    old.unlink(missing_ok=True)
                    for picture in self.directory.glob(f"{old.stem}.*.png"):
                        picture.unlink(missing_ok=True)
        return entry

    def find(self, entry_id: str) -> tuple[HistoryEntry, list] | None:
        """The run a link names (anyone's: the id is the secret) and its pictures (arrays, None where a result
        drew none), or None: an id of another shape (never read as a path), or a run no longer kept."""
        if not isinstance(entry_id, str) or not ENTRY_ID.match(entry_id):
            return None
        with self._lock:
            if self.directory is None:
                found = self._shared.get(entry_id)
                if found is None:
                    return None
                entry, pictures = found[0], found[1]
            else:
                try:
                    entry = HistoryEntry(**json.loads((self.directory / f"{entry_id}.json").read_text()))
                except (OSError, ValueError, TypeError):
                    return None
                pictures = [self._read_png(entry_id, n) for n in range(len(entry.run.get("results") or []))]
        return entry, [_array(p) for p in pictures] if task_of(entry).pictures else []

    def _read_png(self, entry_id: str, n: int) -> bytes | None:
        try:
            return (self.directory / f"{entry_id}.{n}.png").read_bytes()
        except OSError:
            return None

    def entries(self, owner: str) -> list[HistoryEntry]:
        """``owner``'s runs, newest first."""
        with self._lock:
            if self.directory is None:
                return list(self._memory.get(owner, []))
            out = []
            for path in sorted(self.directory.glob("*.json"), reverse=True) if self.directory.is_dir() else ():
                try:
                    out.append(HistoryEntry(**json.loads(path.read_text())))
                except (OSError, ValueError, TypeError):
                    continue  # a file from an older version, or half-deleted: not a run to show
            return out

    def get(self, owner: str, entry_id: str) -> HistoryEntry | None:
        return next((e for e in self.entries(owner) if e.id == entry_id), None)

    def forget(self, owner: str) -> None:
        """Drop a public visitor's runs (their page closed)."""
        if self.directory is None:
            with self._lock:
                self._memory.pop(owner, None)


def _png(image) -> bytes | None:
    """An image result's picture (an HxWx3 uint8 array) as PNG bytes, or None."""
    if image is None:
        return None
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _array(picture: bytes | None):
    if picture is None:
        return None
    import numpy as np
    from PIL import Image

    try:
        return np.asarray(Image.open(io.BytesIO(picture)).convert("RGB"))
    except (OSError, ValueError):
        return None
