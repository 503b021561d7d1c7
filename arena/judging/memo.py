"""Judging figures kept between runs: a repeated run judges only what changed.

Teacher forcing the fixed paragraph (or the long reach), the decode path over an answer and the perplexity of an
answer are deterministic functions of (the candidate's model, the reference's model, the token ids). Each figure is
kept under a key of all three: a backend's identity is its options, the weights' fingerprint, what it loaded
(provider, precision) and, for an export on disk, each of its files' size and modification time (an export edited
in place is a new model). A backend whose model the arena cannot see (a remote server) is never kept
(`Backend.judging_memo`). Bounded: the least recently used entries go first.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from typing import Any

MEMO_ENTRIES = 256  # figures of one sequence each (a 4,096-position curve is ~130 KB as Python floats)
MAX_SIGNED_FILES = 2000  # files of an export whose size and time are read (a real export has a handful)


def digest(ids: Any) -> str:
    """A short hash of token ids (or any JSON-able value)."""
    return hashlib.sha256(json.dumps(list(ids) if not isinstance(ids, str) else ids).encode()).hexdigest()[:24]


def files_signature(folder: str) -> str:
    """Each file's relative path, size and modification time under ``folder`` (bounded), hashed."""
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):  # the cache's own bookkeeping (".last-used" is touched by every load)
                continue
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            entries.append((os.path.relpath(path, folder), stat.st_size, stat.st_mtime_ns))
            if len(entries) >= MAX_SIGNED_FILES:
                return digest(json.dumps(entries))
    return digest(json.dumps(entries))


def identity(spec: Any, load: Any, fingerprint: str) -> str | None:
    """What a backend's figures depend on, hashed; None when its model cannot be known from here."""
    from arena.registry import backend_class

    if not getattr(backend_class(spec.backend), "judging_memo", True):
        return None
    parts = [json.dumps(spec.to_dict(), sort_keys=True, default=str), fingerprint]
    if load is not None:
        parts += [str(load.provider), str(load.precision)]
        if load.artifact_dir and os.path.isdir(load.artifact_dir):
            parts.append(files_signature(load.artifact_dir))
    return digest("\n".join(parts))


class JudgingMemo:
    """A bounded, thread-safe map of judging figures (`identity` and `digest` make the keys)."""

    def __init__(self, entries: int = MEMO_ENTRIES) -> None:
        self._entries = entries
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple | None) -> Any:
        if key is None or None in key:
            return None
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: tuple | None, value: Any) -> None:
        if key is None or None in key or value is None:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._entries:
                self._items.popitem(last=False)
