"""What a finished run leaves behind in the UI: the run kept in History, its report files for download, and a
link that opens the dashboard with the same settings."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from arena import HistoryEntry, share_link, task_of, write_reports
from ui.controls import session_of


@dataclass(frozen=True)
class KeptRun:
    entry: HistoryEntry
    files: list[str]  # the Markdown, JSON and CSV reports (and heatmaps of an image run)
    link: str  # Markdown: the link that opens this result (and the one to its settings)


REPORT_FOLDERS_KEPT = 64  # Gradio copies each download into its own cache when served: older folders can go


def _reports_root() -> Path:
    root = Path(tempfile.gettempdir()) / f"arena-reports-{os.getpid()}"
    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        atexit.register(shutil.rmtree, root, True)
    return root


def report_files(run: dict[str, Any], task: str, images: list | None = None, entry_id: str | None = None) -> list[str]:
    """The run's reports in a fresh temporary folder (Gradio copies them to its own cache to serve them). Only
    the newest `REPORT_FOLDERS_KEPT` folders stay, and the rest go when the app exits."""
    stem = f"arena-{task}-{entry_id or time.strftime('%Y%m%d-%H%M%S')}"
    root = _reports_root()
    directory = tempfile.mkdtemp(prefix="arena-report-", dir=root)
    folders = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in folders[:max(0, len(folders) - REPORT_FOLDERS_KEPT)]:
        shutil.rmtree(old, ignore_errors=True)
    return [str(p) for p in write_reports(run, task, directory, stem=stem, images=images)]


def page_url(request: gr.Request | None) -> str:
    """The dashboard's address as the visitor's browser sees it (the page that sent the event), or "" (then the
    link is relative to the page)."""
    headers = getattr(request, "headers", None) or {}
    referer = headers.get("referer") or ""
    return referer.split("?")[0].split("#")[0] if referer.startswith(("http://", "https://")) else ""


def names_a_path(request: dict[str, Any]) -> bool:
    """Whether a request's backends carry a folder or file of this server (an export path): a settings link
    would show it to whoever gets the link, and only this server could use it."""
    from arena import backend_class

    for backend in request.get("backends") or []:
        try:
            infos = backend_class(backend["backend"]).Options.fields_info()
        except Exception:  # noqa: BLE001 - a backend this build no longer has: nothing of it to hide
            continue
        if any(info.kind == "path" and backend.get(info.name) not in (None, "", info.default) for info in infos):
            return True
    return False


def link_markdown(task: str, run: dict[str, Any], request: gr.Request | None, entry_id: str | None = None) -> str:
    """The result's link (``?run=<id>``: opens with its answers and verdicts, the form filled to run it again),
    short enough to read and copy on a phone; then the settings-only link, unless the settings name a path on
    this server (the example exports), which no link shows."""
    if not run.get("request"):
        return ""
    lines = []
    if entry_id:
        url = f"{page_url(request)}?run={entry_id}"
        lines.append(f"**[Link to this result]({url})** — opens with this run's results and verdicts; Run runs "
                     f"it again\n\n`{url}`")
    if not names_a_path(run["request"]):
        settings = share_link(page_url(request), task, run["request"])
        lines.append(f"[Link to these settings only]({settings}) (the form filled in, nothing run)")
    return "\n\n".join(lines)


def keep_run(arena, task: str, run: dict[str, Any], request: gr.Request | None, images: list | None = None) -> KeptRun:
    """Keep a finished run (``run``: the visitor's view of it) in the history, write its reports, make its link."""
    entry = arena.history.add(session_of(request), task, run, images=images)
    return KeptRun(entry, report_files(run, task, images, entry.id), link_markdown(task, run, request, entry.id))


def moved_on(tab, result) -> dict:
    """Once a run is past its preparation, the last run's link and reports go (they no longer match the panels); a
    run refused before any backend ran keeps them, with the page it leaves as it was."""
    return {} if result.error and not result.results else {tab.share: "", tab.downloads: None}


_UNSEEN = object()


def fingerprint(value: Any) -> Any:
    """What an output's value looks like, cheaply comparable: a run re-renders every output at each of its steps,
    and each picture sent again is encoded to a file again on the server, each chart serialized, sent and drawn
    again by plotly in the browser. Only what changed is sent."""
    if isinstance(value, np.ndarray):
        return ("array", value.shape, value.dtype.str, hashlib.blake2b(value.tobytes(), digest_size=16).digest())
    if isinstance(value, dict):
        return tuple(sorted((str(key), fingerprint(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(fingerprint(item) for item in value))
    if hasattr(value, "to_json") and hasattr(value, "to_plotly_json"):  # a plotly figure
        return ("figure", value.to_json())
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return value


def show_and_keep(arena, tab, task: str, results, render, http: gr.Request | None):
    """A run's updates: ``render(result)`` for each partial result; once finished, keep the run (History) and
    offer its reports and its link (not for a run refused before any backend ran)."""
    final = None
    shown: dict = {}  # output -> fingerprint of what the page shows now
    for final in results:
        fresh = {}
        for output, value in render(final).items():
            seen = fingerprint(value)
            if shown.get(output, _UNSEEN) != seen:
                fresh[output] = value
                shown[output] = seen
        if fresh:
            yield fresh
    if final is not None and final.error and not final.results:
        return  # refused or failed before any backend ran: nothing to keep, no link to settings that cannot run
    if final is not None and final.phase == "stopped":
        return  # stopped by the visitor: unjudged, not a run to keep or share
    if final is not None:
        images = [r.image for r in final.results] if task_of(task).pictures else None
        kept = keep_run(arena, task, arena.public_view(final.to_dict()), http, images=images)
        yield {tab.share: kept.link, tab.downloads: kept.files}
