"""The Load tab: an OpenAI-compatible server swept over concurrency levels (`arena.serving`), with the charts
(latency percentiles and throughput against the level, one line per server, markers in verdict colours), the
summary table and the report. A public server shows why it offers no sweeps instead of a form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from arena import Arena, LoadRunRequest
from ui.colors import fill
from ui.controls import RUN_CONCURRENCY_ID, field_widget, session_of

DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


@dataclass
class LoadTab:
    fields: dict[str, gr.components.Component]
    servers: gr.Textbox
    run: gr.Button
    status: gr.Markdown
    chart: gr.Plot
    table: gr.Dataframe
    report: gr.Markdown
    result_json: gr.JSON

    def outputs(self) -> list:
        return [self.status, self.chart, self.table, self.report, self.result_json]


def parse_servers(text: str) -> list[dict[str, Any]]:
    """One server a line: "BASE_URL" or "BASE_URL MODEL" (a URL, or an operator's endpoint name), for the first
    backend that measures servers (`arena.serving.request.server_backends`)."""
    from arena import server_backends

    servers = []
    for line in (text or "").splitlines():
        parts = line.split(maxsplit=1)
        if parts:
            servers.append({"backend": server_backends()[0], "base_url": parts[0],
                            **({"model": parts[1].strip()} if len(parts) > 1 else {})})
    return servers


def level_state(level: dict[str, Any]) -> str:
    """A level's colour state (`ui.colors`): failed requests or a broken verdict red, DRIFT amber, MATCH green."""
    verdict = level.get("verdict") or {}
    if verdict.get("broken") or level["figures"]["failed"]:
        return "error"
    return {"MATCH": "ok", "NOT COMPARED": "idle"}.get(verdict.get("kind"), "drift")


def load_figure(sweep: dict[str, Any]) -> go.Figure:
    """TTFT and ITL (p50 solid, p90 dashed) and total output tokens/s against the level, one colour-marked line
    per server; each marker is in its level's verdict colour."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("TTFT (ms)", "Inter-token latency (ms)",
                                                        "Output tokens/s (all users)"))
    unit = "users" if sweep.get("kind") == "concurrency" else "requests/s"
    for n, server in enumerate(sweep.get("servers") or []):
        levels = [lv for lv in server.get("levels") or [] if lv["figures"]["completed"]]
        if not levels:
            continue
        x = [lv["level"] for lv in levels]
        colors = [fill(level_state(lv)) for lv in levels]
        name = server["label"].removeprefix("OpenAI-compatible server · ")
        hover = [f"{lv['verdict']['kind']}: {lv['verdict']['reason']}" for lv in levels]
        for col, key in ((1, "ttft_s"), (2, "itl_s")):
            for p, dash in (("p50", DASHES[n % len(DASHES)]), ("p90", "dot")):
                y = [None if lv["figures"][key][p] is None else lv["figures"][key][p] * 1000 for lv in levels]
                fig.add_trace(go.Scatter(x=x, y=y, name=f"{name} {p}", mode="lines+markers", hovertext=hover,
                                         line={"color": "#475569", "dash": dash},
                                         marker={"color": colors, "size": 10}, legendgroup=name,
                                         showlegend=col == 1), row=1, col=col)
        fig.add_trace(go.Scatter(x=x, y=[lv["figures"]["output_tokens_per_s"] for lv in levels], name=name,
                                 mode="lines+markers", hovertext=hover, legendgroup=name, showlegend=False,
                                 line={"color": "#475569", "dash": DASHES[n % len(DASHES)]},
                                 marker={"color": colors, "size": 10}), row=1, col=3)
    levels = sorted({lv["level"] for s in sweep.get("servers") or [] for lv in s.get("levels") or []})
    for col in (1, 2, 3):
        fig.update_xaxes(title_text=unit, type="log" if sweep.get("kind") == "concurrency" else "linear",
                         tickvals=levels, ticktext=[f"{v:g}" for v in levels], row=1, col=col)
    fig.update_layout(height=380, margin={"l": 40, "r": 10, "t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def render(sweep: dict[str, Any]) -> dict:
    """The tab's outputs from a sweep's JSON (the API's answer)."""
    from arena import load_report_markdown, load_summary_rows

    if sweep.get("error"):
        return {"status": f"**Not run:** {sweep['error']}", "figure": go.Figure(), "rows": [],
                "report": "", "json": sweep}
    busy = any((lv.get("machine") or {}).get("busy") for s in sweep["servers"] for lv in s["levels"])
    status = "Done." + (" Some levels were timed on a busy machine (see the report)." if busy else "")
    return {"status": status, "figure": load_figure(sweep), "rows": [list(r) for r in load_summary_rows(sweep)],
            "report": load_report_markdown(sweep), "json": sweep}


def build_load_tab(arena: Arena) -> LoadTab | None:
    """The form and the results; None on a public server (a sentence says why there is no form)."""
    from arena import LOAD_PUBLIC_REFUSAL as PUBLIC_REFUSAL
    from arena import LOAD_SUMMARY_HEADER as SUMMARY_HEADER

    if arena.policy.public:
        gr.Markdown(PUBLIC_REFUSAL, elem_id="load-refused")
        return None
    gr.Markdown("Sweep an OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, `transformers serve`...) from 1 "
                "to N users: the same prompts and output lengths at every level (EOS ignored, greedy), latency "
                "percentiles, throughput, goodput, and every level's answers judged against the reference. "
                "See docs/load.md.")
    servers = gr.Textbox("", label="Servers (one a line: base URL, then the model name if it serves several)",
                         placeholder="http://127.0.0.1:8000/v1", lines=2, elem_id="load-servers")
    fields: dict[str, gr.components.Component] = {}
    with gr.Row():
        for name in ("model", "concurrency", "rates", "requests", "max_new_tokens", "warmup"):
            fields[name] = field_widget(LoadRunRequest.field(name), arena.policy, elem_id=f"load-{name}")
    with gr.Accordion("Prompts, objectives and reference", open=False):
        fields["prompts"] = field_widget(LoadRunRequest.field("prompts"), arena.policy, lines=3)
        with gr.Row():
            for name in ("ttft_slo_s", "itl_slo_ms", "e2e_slo_s", "reference", "seed"):
                fields[name] = field_widget(LoadRunRequest.field(name), arena.policy, elem_id=f"load-{name}")
    run = gr.Button("Run the sweep", variant="primary", elem_id="load-run")
    status = gr.Markdown("", elem_id="load-status")
    chart = gr.Plot(label="Latency and throughput against the level", elem_id="load-chart")
    table = gr.Dataframe(headers=list(SUMMARY_HEADER), label="Summary", interactive=False, elem_id="load-table")
    with gr.Accordion("Report (Markdown)", open=False):
        report = gr.Markdown("", elem_id="load-report")
    with gr.Accordion("JSON", open=False):
        result_json = gr.JSON(label="sweep")
    tab = LoadTab(fields, servers, run, status, chart, table, report, result_json)

    def execute(data: dict, http: gr.Request, progress=gr.Progress()) -> dict:
        from arena import load_sweep_values

        form = {name: data[widget] for name, widget in fields.items()} | {"backends": parse_servers(data[servers])}
        if not form["backends"]:
            sweep = {"error": "Give the server's base URL (one a line).", "servers": []}
        else:
            with arena.stoppable(session_of(http)) as cancel:
                sweep = load_sweep_values(arena, form, cancel, lambda f, d: progress(f or 0.0, desc=d))
        shown = render(arena.public_view(sweep))
        return {status: shown["status"], chart: shown["figure"], table: shown["rows"], report: shown["report"],
                result_json: shown["json"]}

    run.click(execute, {servers, *fields.values()}, tab.outputs(), api_visibility="private",
              concurrency_limit=1, concurrency_id=RUN_CONCURRENCY_ID)
    return tab
