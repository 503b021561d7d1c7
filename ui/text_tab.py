"""The Text tab: model picker, backend options, prompt, and one panel per backend that fills as it finishes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from arena.preparing.catalog import CATALOG, DEFAULT_TEXT_MODEL, EXAMPLE_PROMPTS, PROMPT_FORMATS, find_catalog_model
from arena.core import Arena
from arena.types import TextRunRequest
from ui.charts import position_kl_figure, speed_quality_figure, text_latency_figure
from ui.controls import (
    RUN_CONCURRENCY_ID,
    BackendOptionControls,
    build_backend_controls,
    reference_dropdown,
    session_of,
    specs_from_form,
    wire_stop,
)
from ui.demos import BROKEN_TEXT, GOOD_TEXT, wire_text_demos
from ui.format import idle_panel, panel_header, panel_metrics, run_summary


@dataclass
class BackendControls:
    """The widgets of one backend's options and its result panel."""

    name: str
    title: str
    controls: BackendOptionControls
    header: gr.Markdown
    answer: gr.Textbox
    metrics: gr.Markdown


@dataclass
class TextTab:
    model: gr.Dropdown
    model_notes: gr.Markdown
    prompt_format: gr.Dropdown
    prompt: gr.Textbox
    max_new_tokens: gr.Slider
    ignore_eos: gr.Checkbox
    warmup: gr.Number
    repeats: gr.Number
    reference: gr.Dropdown
    run: gr.Button
    stop: gr.Button
    status: gr.Markdown
    backends: list[BackendControls]
    chart: gr.Plot
    quality_chart: gr.Plot
    result_json: gr.JSON
    share: gr.Markdown | None = None  # after a run: the link to its settings
    downloads: gr.File | None = None  # after a run: its reports
    position_chart: gr.Plot | None = None  # teacher-forced KL per position: where in the sequence it breaks


def model_notes(model: str) -> str:
    entry = find_catalog_model(model or "")
    if entry is not None:
        return f"**{entry.title}** — prompt format `{entry.prompt_format}`. {entry.notes}"
    if not model:
        return ""
    return (f"`{model}`: loaded as a Hugging Face hub id, or as a local directory if one exists at that path "
            "(folders written by `save_pretrained`).")


def request_from_form(values: dict[str, Any]) -> TextRunRequest:
    """Gather the widgets into one immutable request. No model code here."""
    return TextRunRequest(
        model=(values["model"] or DEFAULT_TEXT_MODEL).strip(),
        prompt=values["prompt"] or "",
        backends=specs_from_form(values["backends"]),
        max_new_tokens=int(values["max_new_tokens"]),
        prompt_format=values["prompt_format"],
        ignore_eos=bool(values["ignore_eos"]),
        warmup=max(0, int(values["warmup"] or 0)),
        repeats=max(1, int(values["repeats"] or 1)),
        reference=values.get("reference") or "auto",
    )


def build_text_tab(arena: Arena) -> TextTab:
    """Lay out the tab and wire its events to the arena."""
    backend_options = arena.backend_options()
    public, limits = arena.public.policy.public, arena.public.policy.limits
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            model = gr.Dropdown(
                choices=[(entry.title, entry.key) for entry in CATALOG], value=DEFAULT_TEXT_MODEL,
                allow_custom_value=True, label="Model",
                info="Pick one, or type any Hugging Face hub id" + ("." if public else
                                                                      " or local directory of a causal LM."))
            notes = gr.Markdown(model_notes(DEFAULT_TEXT_MODEL), elem_classes=["arena-notes"])
            prompt_format = gr.Dropdown(choices=[(f.label, f.name) for f in PROMPT_FORMATS.values()],
                                        value="auto", label="Prompt format")
            controls = build_backend_controls(backend_options, "", "text", allow_paths=not public)
            max_new_tokens = gr.Slider(1, min(512, limits.max_new_tokens) if public else 512, value=64, step=1,
                                       label="Max new tokens")
            reference = reference_dropdown(backend_options, "text-reference", "text")
            with gr.Accordion("Timing protocol", open=False):
                ignore_eos = gr.Checkbox(False, label="Ignore EOS (always generate max new tokens)",
                                         info="For benchmarking: every backend produces the same number of tokens.")
                warmup = gr.Number(1, precision=0, minimum=0, maximum=limits.max_warmup if public else 10,
                                   label="Warm-up generations (untimed)")
                repeats = gr.Number(1, precision=0, minimum=1, maximum=limits.max_repeats if public else 20,
                                    label="Timed repeats (median reported)")
        with gr.Column(scale=3):
            prompt = gr.Textbox(EXAMPLE_PROMPTS[0], lines=3, label="Prompt", elem_id="prompt")
            gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt], label="Example prompts")
            with gr.Row(elem_id="text-demos"):
                demo_broken = gr.Button(BROKEN_TEXT, size="sm", elem_id="demo-broken-text")
                demo_good = gr.Button(GOOD_TEXT, size="sm", elem_id="demo-good-text")
            with gr.Row():
                run = gr.Button("Run", variant="primary", elem_id="run-text", scale=4)
                stop = gr.Button("Stop", variant="stop", elem_id="stop-text", scale=1)
            status = gr.Markdown("", elem_id="run-status", min_height=60)
            share = gr.Markdown("", elem_id="share-text", elem_classes=["arena-notes"])
            panels = []
            with gr.Row(equal_height=True):
                for control in controls:
                    name = control.name
                    with gr.Column(elem_id=f"panel-{name}", elem_classes=["arena-panel"]):
                        header = gr.Markdown(panel_header(control.title, None,
                                                         "unavailable" if control.unavailable else "idle"))
                        answer = gr.Textbox(label="Answer", lines=8, interactive=False, elem_id=f"answer-{name}",
                                            buttons=["copy"])
                        metrics = gr.Markdown(control.unavailable, elem_id=f"metrics-{name}")
                    panels.append(BackendControls(name, control.title, control, header, answer, metrics))
            chart = gr.Plot(text_latency_figure({}), label="Latency", elem_id="latency-chart")
            quality_chart = gr.Plot(speed_quality_figure({}), label="Speed against quality",
                                    elem_id="speed-quality-chart")
            position_chart = gr.Plot(position_kl_figure({}), label="Where in the sequence",
                                     elem_id="position-kl-chart")
            downloads = gr.File(label="Reports of this run (Markdown for an issue, JSON, CSV)", file_count="multiple",
                                interactive=False, elem_id="downloads-text")
            with gr.Accordion("Structured result (JSON, same as the /compare_text API)", open=False):
                result_json = gr.JSON(label="Result")
    tab = TextTab(model, notes, prompt_format, prompt, max_new_tokens, ignore_eos, warmup, repeats, reference, run,
                  stop, status, panels, chart, quality_chart, result_json, share=share, downloads=downloads,
                  position_chart=position_chart)
    _wire(arena, tab)
    wire_text_demos(arena, tab, demo_broken, demo_good)
    return tab


def _wire(arena: Arena, tab: TextTab) -> None:
    tab.model.change(model_notes, tab.model, tab.model_notes, api_visibility="private")
    inputs = {tab.model, tab.prompt_format, tab.prompt, tab.max_new_tokens, tab.ignore_eos, tab.warmup,
              tab.repeats, tab.reference}
    for panel in tab.backends:
        inputs.add(panel.controls.enabled)
        inputs.update(panel.controls.widgets.values())
    outputs = [tab.status, tab.chart, tab.quality_chart, tab.position_chart, tab.result_json, tab.share,
               tab.downloads]
    for panel in tab.backends:
        outputs += [panel.header, panel.answer, panel.metrics]

    def run_from_ui(data: dict, http: gr.Request, progress=gr.Progress()):
        values = {
            "model": data[tab.model], "prompt_format": data[tab.prompt_format], "prompt": data[tab.prompt],
            "max_new_tokens": data[tab.max_new_tokens], "ignore_eos": data[tab.ignore_eos],
            "warmup": data[tab.warmup], "repeats": data[tab.repeats], "reference": data[tab.reference],
            "backends": {p.name: p.controls.values(data) for p in tab.backends},
        }
        try:
            run = request_from_form(values)
        except ValueError as exc:
            yield {tab.status: f"<span class='arena-badge arena-badge-error'>ERROR</span> {exc}"}
            return
        selected = {spec.backend for spec in run.backends}
        yield {tab.status: "Running…", tab.share: "", tab.downloads: None,
               **render_run(tab, {"results": []}, selected)}
        with arena.stoppable(session_of(http)) as cancel:
            yield from run_and_keep(arena, tab, arena.run_text(run, progress=lambda f, d: progress(f, desc=d),
                                                               cancel=cancel), selected, http)

    # Progress shows on the status line only: a loading overlay on every output keeps the browser repainting,
    # which on a small machine steals cores from the workers being timed.
    tab.run.click(run_from_ui, inputs, outputs, api_visibility="private", concurrency_limit=1,
                  concurrency_id=RUN_CONCURRENCY_ID, show_progress_on=[tab.status])
    wire_stop(arena, tab.stop, tab.status)


def run_and_keep(arena: Arena, tab: TextTab, results, selected: set[str], http: gr.Request | None):
    """Render each partial result; once finished, keep the run (History), offer its reports and its link."""
    from ui.downloads import keep_run

    final = None
    for result in results:
        final = arena.public_view(result.to_dict())
        yield render_run(tab, final, selected)
    if final is not None:
        kept = keep_run(arena, "text", final, http)
        yield {tab.share: kept.link, tab.downloads: kept.files}


def render_run(tab: TextTab, run: dict[str, Any], selected: set[str]) -> dict:
    """Updates for every output from the run's current (possibly partial) result."""
    by_backend = {r["backend"]: r for r in run["results"]}
    index = run.get("reference_index")
    reference = run["results"][index] if index is not None and index < len(run["results"]) else None
    reference_text = reference["text"] if reference and not reference.get("error") else None
    updates: dict = {tab.status: run_summary(run) if run["results"] or run.get("error") else "Running…",
                     tab.chart: text_latency_figure(run), tab.quality_chart: speed_quality_figure(run),
                     tab.position_chart: position_kl_figure(run),
                     tab.result_json: json.loads(json.dumps(run, default=str))}
    for panel in tab.backends:
        result = by_backend.get(panel.name)
        state, idle = idle_panel(panel.name, selected, panel.controls.unavailable, bool(run.get("error")))
        updates[panel.header] = panel_header(panel.title, result, state)
        updates[panel.answer] = result["text"] if result else ""
        updates[panel.metrics] = panel_metrics(result, None if result is reference else reference_text) \
            if result else idle
    return updates
