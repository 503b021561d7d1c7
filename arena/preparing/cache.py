"""A directory of conversion artifacts (materialized models, ONNX exports) that never trusts half a build.

Each entry is ``<root>/<kind>/<key>/`` with a ``manifest.json`` written last. A build happens in a
temporary sibling folder that is renamed into place only when complete, so a killed export or a crash
leaves at most a ``.tmp-*`` folder, which lookups ignore and `clean_stale` removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
LAST_USED = ".last-used"  # touched on every use: the least recently used entries go first when the cache is full
HUB_KIND = "hub"  # Hugging Face downloads in public mode (``<root>/hub/models--owner--name``), evicted alike


def default_cache_dir() -> Path:
    """``$ARENA_CACHE_DIR``, else ``$XDG_CACHE_HOME/backend-arena``, else ``~/.cache/backend-arena``."""
    if os.environ.get("ARENA_CACHE_DIR"):
        return Path(os.environ["ARENA_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "backend-arena"


def cache_key(fields: Mapping[str, Any]) -> str:
    """A short stable hash of the fields that decide an artifact's content."""
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def directory_fingerprint(directory: str | Path, patterns: tuple[str, ...] = ("*",)) -> str:
    """Identify a model folder by file names, sizes and modification times (cheap for GB of weights)."""
    root = Path(directory)
    entries = []
    for pattern in patterns:
        for path in sorted(root.rglob(pattern)):
            if path.is_file() and ".tmp-" not in str(path):
                stat = path.stat()
                entries.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(sorted(set(entries))).encode()).hexdigest()[:20]


class ArtifactCache:
    """Atomic, manifest-checked cache entries grouped by kind ("models", "onnx", ...)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry_dir(self, kind: str, fields: Mapping[str, Any]) -> Path:
        return self.root / kind / cache_key(fields)

    def lookup(self, kind: str, fields: Mapping[str, Any]) -> Path | None:
        """The finished entry for these fields, or None (half-built folders are never returned)."""
        path = self.entry_dir(kind, fields)
        if not (path / MANIFEST).is_file():
            return None
        mark_used(path)
        return path

    def manifest(self, path: Path) -> dict[str, Any]:
        return json.loads((path / MANIFEST).read_text())

    def get_or_build(self, kind: str, fields: Mapping[str, Any],
                     build: Callable[[Path], Mapping[str, Any] | None]) -> tuple[Path, bool]:
        """Return ``(path, built_now)``; ``build(tmp_dir)`` fills a temporary folder on a miss."""
        found = self.lookup(kind, fields)
        if found is not None:
            return found, False
        final = self.entry_dir(kind, fields)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            extra = build(tmp) or {}
            manifest = {"kind": kind, "key": final.name, "fields": dict(fields),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **dict(extra)}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            if final.exists():  # a broken leftover without manifest, or another process won the race
                if (final / MANIFEST).is_file():
                    shutil.rmtree(tmp, ignore_errors=True)
                    return final, False
                shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
            mark_used(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final, True

    def clean_stale(self, older_than_s: float = 0.0) -> list[Path]:
        """Remove temporary folders whose builder process is gone (killed runs); returns what was removed."""
        removed = []
        if not self.root.is_dir():
            return removed
        for kind_dir in self.root.iterdir():
            if not kind_dir.is_dir():
                continue
            for path in kind_dir.glob(".tmp-*"):
                pid = _pid_of(path.name)
                alive = pid is not None and _pid_alive(pid)
                old = time.time() - path.stat().st_mtime > older_than_s
                if not alive and old:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
        return removed


    def temporary(self) -> list[Path]:
        """Every ``.tmp-*`` build folder, finished or not."""
        if not self.root.is_dir():
            return []
        return [p for kind_dir in self.root.iterdir() if kind_dir.is_dir() for p in kind_dir.glob(".tmp-*")]

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last used, bytes, folder) for every finished entry and every hub download, oldest use first."""
        found = []
        if not self.root.is_dir():
            return found
        for kind_dir in self.root.iterdir():
            if not kind_dir.is_dir() or kind_dir.name == "logs":
                continue
            for path in kind_dir.iterdir():
                finished = (path / MANIFEST).is_file() or (kind_dir.name == HUB_KIND and path.name.startswith(
                    ("models--", "datasets--")))
                if path.is_dir() and finished:
                    found.append((_last_used(path), _folder_bytes(path), path))
        return sorted(found, key=lambda item: item[0])

    def enforce_limit(self, max_bytes: float, keep_newest: int = 1, in_use: Iterable[str | Path] = ()) -> list[Path]:
        """Delete least recently used entries until the cache holds at most ``max_bytes``; returns what went.

        The ``keep_newest`` most recently used entries stay whatever their size (the run that just finished), and
        so does every entry holding, or inside, an ``in_use`` folder (another run's model or export).
        """
        entries = self.entries()
        # Half-built folders (a build still going, or one the clean-up could not remove) take disk too.
        total = sum(size for _, size, _ in entries) + sum(_folder_bytes(p) for p in self.temporary())
        used = [Path(p).absolute() for p in in_use]
        removed = []
        for _used, size, path in entries[:max(0, len(entries) - keep_newest)]:
            if total <= max_bytes:
                break
            here = path.absolute()
            if any(u == here or here in u.parents or u in here.parents for u in used):
                continue
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            removed.append(path)
        return removed


def mark_used(path: Path) -> None:
    """Record that an entry was used now (its files' own times say when it was built, not used)."""
    try:
        (Path(path) / LAST_USED).touch()
    except OSError:
        pass  # a read-only cache still works; it is only evicted in build order


def _last_used(path: Path) -> float:
    marker = path / LAST_USED
    return marker.stat().st_mtime if marker.exists() else path.stat().st_mtime


def _folder_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                stat = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += stat.st_size
    return total


def _pid_of(name: str) -> int | None:
    parts = name.split("-")
    try:
        return int(parts[2])
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
