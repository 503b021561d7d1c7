"""A load sweep's reports: one row per server and level (the summary table, CSV), Markdown with the failures, the
verdicts and the busy-machine marks, and the JSON itself. Pure stdlib: the UI, the API and the CLI share them."""

from __future__ import annotations

import csv
import io
import json
import shlex
from pathlib import Path
from typing import Any

CSV_COLUMNS = ("label", "level_kind", "level", "requests", "completed", "failed", "ttft_p50_s", "ttft_p90_s",
               "ttft_p99_s", "itl_p50_s", "itl_p90_s", "itl_p99_s", "e2e_p50_s", "e2e_p90_s", "e2e_p99_s",
               "output_tokens_per_s", "output_tokens_per_s_per_user", "requests_per_s", "goodput_share",
               "goodput_requests_per_s", "verdict", "differ_from_first_level", "busy_machine", "failures")


def rows(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat dict per server and level (CSV_COLUMNS), the levels in the order run."""
    out = []
    for server in sweep.get("servers") or []:
        for level in server.get("levels") or []:
            f, verdict, busy = level["figures"], level.get("verdict") or {}, level.get("machine") or {}
            row = {"label": server["label"], "level_kind": sweep.get("kind"), "level": level["level"],
                   "requests": f["requests"], "completed": f["completed"], "failed": f["failed"],
                   "output_tokens_per_s": f["output_tokens_per_s"],
                   "output_tokens_per_s_per_user": f["output_tokens_per_s_per_user"],
                   "requests_per_s": f["requests_per_s"], "goodput_share": f["goodput_share"],
                   "goodput_requests_per_s": f["goodput_requests_per_s"], "verdict": verdict.get("kind"),
                   "differ_from_first_level": verdict.get("differ_from_first_level"),
                   "busy_machine": "; ".join(busy.get("reasons") or []) if busy.get("busy") else "",
                   "failures": "; ".join(f"{n}× {why}" for why, n in f["failures"].items())}
            for name in ("ttft", "itl", "e2e"):
                for p in ("p50", "p90", "p99"):
                    row[f"{name}_{p}_s"] = f[f"{name}_s"][p]
            out.append(row)
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


SUMMARY_HEADER = ("endpoint", "level", "done/sent", "TTFT p50/p90/p99 ms", "ITL p50/p90/p99 ms",
                  "E2E p50/p90/p99 ms", "tok/s total", "tok/s per user", "req/s", "goodput", "verdict", "busy")


def summary_rows(sweep: dict[str, Any]) -> list[tuple[str, ...]]:
    """The summary table's cells, as the dashboard, the CLI and the Markdown show them."""
    cells = []
    for row in rows(sweep):
        level = row["level"]
        shown = (f"{level:g} user" + ("s" if level != 1 else "")) if sweep.get("kind") == "concurrency" else \
            f"{level:g} req/s"
        cells.append((row["label"], shown, f"{row['completed']}/{row['requests']}",
                      "/".join(_ms(row[f"ttft_{p}_s"]) for p in ("p50", "p90", "p99")),
                      "/".join(_ms(row[f"itl_{p}_s"]) for p in ("p50", "p90", "p99")),
                      "/".join(_ms(row[f"e2e_{p}_s"]) for p in ("p50", "p90", "p99")),
                      _num(row["output_tokens_per_s"]), _num(row["output_tokens_per_s_per_user"]),
                      _num(row["requests_per_s"], 2), f"{row['goodput_share']:.0%}", str(row["verdict"]),
                      "busy" if row["busy_machine"] else ""))
    return cells


def text_table(sweep: dict[str, Any]) -> str:
    """The summary as aligned columns (the CLI), then each server's problems."""
    if sweep.get("error"):
        return str(sweep["error"])
    table = [SUMMARY_HEADER, *summary_rows(sweep)]
    widths = [max(len(r[i]) for r in table) for i in range(len(SUMMARY_HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(lines + problems(sweep))


def problems(sweep: dict[str, Any]) -> list[str]:
    """One line per server error, early stop, level failure reason and level verdict that is not MATCH."""
    out = []
    for server in sweep.get("servers") or []:
        if server.get("error"):
            out.append(f"{server['label']}: {server['error']}")
        for level in server.get("levels") or []:
            f, verdict = level["figures"], level.get("verdict") or {}
            for why, n in f["failures"].items():
                out.append(f"{server['label']} at {level['level']:g}: {n} failed: {why}")
            for warning in f.get("warnings") or []:
                out.append(f"{server['label']} at {level['level']:g}: {warning}")
            if verdict.get("kind") not in (None, "MATCH"):
                out.append(f"{server['label']} at {level['level']:g}: {verdict['kind']}: {verdict.get('reason')}")
        if server.get("stopped_early"):
            out.append(f"{server['label']}: {server['stopped_early']}")
    return out


def report_csv(sweep: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows(sweep))
    return out.getvalue()


def report_json(sweep: dict[str, Any]) -> str:
    return json.dumps(sweep, indent=2, default=str)


def command(sweep: dict[str, Any]) -> str:
    """The CLI command that runs this sweep again."""
    from arena.fields import cli_arguments
    from arena.serving.request import LoadRunRequest

    request = sweep.get("request") or {}
    parts = ["python", "-m", "arena", "load", *cli_arguments(LoadRunRequest, request)]
    for spec in request.get("backends") or []:
        options = ",".join(f"{k}={v}" for k, v in spec.items() if k not in ("backend", "label") and v is not None)
        parts += ["--backend", spec["backend"] + (f":{options}" if options else "")]
    return shlex.join(parts)


def report_markdown(sweep: dict[str, Any]) -> str:
    """A report to paste in an issue: settings, the summary table, problems, busy-machine marks, the command."""
    request, model = sweep.get("request") or {}, sweep.get("model") or {}
    kind = "concurrent users (closed loop)" if sweep.get("kind") == "concurrency" else "requests/s (Poisson)"
    lines = ["## Backend Arena: load sweep", ""]
    if sweep.get("error"):
        return "\n".join(lines + [f"**Refused or failed:** {sweep['error']}", ""])
    reference = sweep.get("reference")
    lines += [f"**Model:** `{model.get('name') or request.get('model')}` · **levels:** "
              f"{', '.join(f'{v:g}' for v in sweep.get('levels') or [])} {kind} · **per level:** "
              f"{request.get('requests')} requests of {request.get('max_new_tokens')} output tokens (EOS ignored), "
              f"greedy, after {request.get('warmup')} warm-up request(s) · **answers judged against:** "
              + (reference["label"] if reference else "the server's own first level only"), ""]
    first = next((lv for s in sweep.get("servers") or [] for lv in s.get("levels") or []), None)
    if first:
        lines += [f"**Goodput objectives:** {first['figures']['objectives']}", ""]
    lines += ["| " + " | ".join(SUMMARY_HEADER) + " |", "|" + "---|" * len(SUMMARY_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(sweep)]
    found = problems(sweep)
    if found:
        lines += ["", "### Problems and verdicts", "", *[f"- {line}" for line in found]]
    busy = [(s["label"], lv) for s in sweep.get("servers") or [] for lv in s.get("levels") or []
            if (lv.get("machine") or {}).get("busy")]
    if busy:
        lines += ["", "### Timings taken on a busy machine", ""]
        lines += [f"- {label} at {lv['level']:g}: {'; '.join(lv['machine']['reasons'])} (load average "
                  f"{lv['machine'].get('load_before')} on {lv['machine'].get('cpus')} CPU(s))" for label, lv in busy]
    notes = [f"- {s['label']}: {'; '.join(s.get('notes') or [])}" for s in sweep.get("servers") or []]
    lines += ["", "### How each server was called", "", *notes, "", "### Reproduce", "", "```bash", command(sweep),
              "```", ""]
    return "\n".join(lines)


def write_reports(sweep: dict[str, Any], directory: str | Path, stem: str = "arena-load") -> list[Path]:
    """``<stem>.json``, ``.csv`` and ``.md`` in ``directory``; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in ((".json", report_json(sweep)), (".csv", report_csv(sweep)), (".md", report_markdown(sweep))):
        path = directory / f"{stem}{suffix}"
        path.write_text(text)
        paths.append(path)
    return paths
