"""The History tab: every kept run in a table; two picked side by side; the first one's reports; run it again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from arena import Arena, HistoryEntry, request_of, task_of
from ui.controls import session_of
from ui.downloads import report_files
from ui.share import PRESS_RUN_JS, fill_updates, form_outputs

COLUMNS = ["time", "task", "model", "prompt", "backends", "speed"]


@dataclass
class HistoryTab:
    table: gr.Dataframe
    refresh: gr.Button
    first: gr.Dropdown
    second: gr.Dropdown
    comparison: gr.Markdown
    downloads: gr.File
    again: gr.Button


def _excerpt(text: str, n: int = 120) -> str:
    text = " ".join((text or "").split()).replace("|", "\\|")
    return text if len(text) <= n else text[:n - 1] + "…"


def _cells(entry: HistoryEntry | None, result: dict[str, Any] | None) -> list[str]:
    if entry is None:
        return ["–"] * 5
    if result is None:
        return ["not in this run"] + ["–"] * 4
    verdict = result.get("verdict") or {}
    kind = verdict.get("kind") or ("ERROR" if result.get("error") else "–")
    t = result.get("timings") or {}
    if task_of(entry).pictures:
        psnr = result.get("psnr_vs_reference_db")
        return [f"**{kind}**", f"{t['total_s']:.2f} s" if t.get("total_s") else "–", "–",
                "identical" if result.get("identical_to_reference") else f"PSNR {psnr} dB" if psnr else "–",
                _excerpt(result.get("error") or verdict.get("reason", ""))]
    return [f"**{kind}**", f"{t['tokens_per_s']:.1f} tok/s" if t.get("tokens_per_s") else "–",
            f"{t['ttft_s'] * 1000:.0f} ms" if t.get("ttft_s") else "–",
            _excerpt(result.get("error") or result.get("text", "")), _excerpt(verdict.get("reason", ""), 80)]


def comparison_markdown(a: HistoryEntry | None, b: HistoryEntry | None) -> str:
    """Two kept runs side by side: settings, then per backend label the verdict, speed, TTFT and an excerpt."""
    if a is None and b is None:
        return "Pick two runs to compare them."
    runs = [a, b]

    def setting(entry, key):
        return "–" if entry is None else str((entry.run.get("request") or {}).get(key, "–")).replace("|", "\\|")

    lines = ["| | Run A | Run B |", "|---|---|---|",
             "| Time | " + " | ".join(e.created if e else "–" for e in runs) + " |",
             "| Task | " + " | ".join(e.task if e else "–" for e in runs) + " |"]
    task = (a or b).task
    fields = [info for info in task_of(task).request.fields() if info.kind != "backends"]
    lines += [f"| {info.label} | {setting(a, info.name)} | {setting(b, info.name)} |" for info in fields]
    labels: list[str] = []
    for entry in runs:
        for r in (entry.run.get("results") or []) if entry else []:
            if r["label"] not in labels:
                labels.append(r["label"])
    rows = ("Verdict", "Total", "–", "vs reference", "Why") if task_of(task).pictures else \
        ("Verdict", "Tokens/s", "TTFT", "Answer", "Why")
    for label in labels:
        found = [next((r for r in (e.run.get("results") or []) if r["label"] == label), None) if e else None
                 for e in runs]
        cells = [_cells(e, r) for e, r in zip(runs, found, strict=True)]
        lines += ["", f"#### {label}", "", "| | Run A | Run B |", "|---|---|---|"]
        lines += [f"| {row} | {cells[0][i]} | {cells[1][i]} |" for i, row in enumerate(rows) if row != "–"]
    return "\n".join(lines)


def build_history_tab(arena: Arena) -> HistoryTab:
    gr.Markdown("Every run you make is kept here" + (" for this browser session only (this is a public server: "
                                                     "nobody else sees your runs)." if arena.policy.public else
                                                     f" (the last {arena.history.limit}, in the cache folder).")
                + " Pick two to compare them, download the first one's reports, or run it again.",
                elem_classes=["arena-notes"])
    refresh = gr.Button("Refresh", size="sm", elem_id="history-refresh")
    table = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, wrap=True, elem_id="history-table",
                         label="Kept runs (newest first)", column_widths=["9%", "6%", "15%", "22%", "33%", "15%"])
    with gr.Row():
        first = gr.Dropdown([], label="Run A", elem_id="history-a")
        second = gr.Dropdown([], label="Run B", elem_id="history-b")
    again = gr.Button("Run A again", variant="primary", elem_id="history-again")
    comparison = gr.Markdown("Pick two runs to compare them.", elem_id="history-comparison")
    downloads = gr.File(label="Run A's reports (Markdown for an issue, JSON, CSV)", file_count="multiple",
                        interactive=False, elem_id="history-downloads")
    tab = HistoryTab(table, refresh, first, second, comparison, downloads, again)
    _wire(arena, tab)
    return tab


def _wire(arena: Arena, tab: HistoryTab) -> None:
    def compare(first: str | None, second: str | None, http: gr.Request):
        owner = session_of(http)
        a = arena.history.get(owner, first) if first else None
        b = arena.history.get(owner, second) if second else None
        files = report_files(a.run, a.task, entry_id=a.id) if a else None
        return {tab.comparison: comparison_markdown(a, b), tab.downloads: files}

    for dropdown in (tab.first, tab.second):
        dropdown.change(compare, [tab.first, tab.second], [tab.comparison, tab.downloads], api_visibility="private")


def wire_history(arena: Arena, tab: HistoryTab, history_page: gr.Tab, text, image, tabs) -> None:
    """Listing when the tab opens; "Run A again" fills A's tab and presses its Run button."""

    def refresh(http: gr.Request):
        entries = arena.history.entries(session_of(http))
        choices = [(e.title(), e.id) for e in entries]
        # The default pair: the newest run and the newest before it of the same task (never text against image).
        second = next((e.id for e in entries[1:] if e.task == entries[0].task), None) if entries else None
        return {tab.table: [[e.summary()[c] for c in COLUMNS] for e in entries],
                tab.first: gr.Dropdown(choices=choices, value=entries[0].id if entries else None),
                tab.second: gr.Dropdown(choices=choices, value=second)}

    for event in (history_page.select, tab.refresh.click):
        event(refresh, None, [tab.table, tab.first, tab.second], api_visibility="private", queue=False)

    def again(first: str | None, http: gr.Request):
        entry = arena.history.get(session_of(http), first) if first else None
        if entry is None:
            return {tab.comparison: "Pick a run A first."}
        try:
            request = request_of(entry.task, entry.run)
        except (ValueError, TypeError, KeyError) as exc:
            return {tab.comparison: f"This run cannot be run again: {exc}"}
        return fill_updates(text, image, tabs, entry.task, request)

    tab.again.click(again, tab.first, [tab.comparison, *form_outputs(text, image, tabs)], api_visibility="private",
                    queue=False).then(None, js=PRESS_RUN_JS)
