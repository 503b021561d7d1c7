"""The Text tab: model picker, backend options, prompt, and one panel per backend that fills as it finishes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from arena import CATALOG, EXAMPLE_PROMPTS, PROMPT_FORMATS, Arena, TextRunRequest, find_catalog_model
from ui import controls as ctl
from ui.charts import position_kl_figure, speed_quality_figure, text_latency_figure, where_figure
from ui.demos import BROKEN_TEXT, GOOD_TEXT
from ui.downloads import moved_on, show_and_keep
from ui.format import idle_panel, panel_header, panel_metrics, run_summary, summary_table


@dataclass
class BackendControls:
    """The widgets of one backend's options and its result panel."""

    name: str
    title: str
    controls: ctl.BackendOptionControls
    header: gr.Markdown
    answer: gr.Textbox
    metrics: gr.Markdown


@dataclass
class TextTab:
    fields: dict[str, gr.components.Component]  # one widget per request field (`TextRunRequest.fields()`)
    model_notes: gr.Markdown
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
    where_chart: gr.Plot | None = None  # each unit's error against the reference: where in the model it breaks
    summary: gr.HTML | None = None  # under the status line: one row per backend (`format.summary_table`)

    task = "text"  # every tab says which task it shows and renders a result dict the same way (ui/share.py)

    @property
    def model(self) -> gr.components.Component:
        return self.fields["model"]

    @property
    def form_panels(self) -> list[BackendControls]:
        return self.backends

    def render_dict(self, run: dict[str, Any], pictures: list, selected: set[str]) -> dict:
        """A kept run's updates (``pictures``: none for text)."""
        return render_run(self, run, selected)

    @staticmethod
    def summary_text(run: dict[str, Any]) -> str:
        return run_summary(run)

    def idle_updates(self, selected: set[str]) -> dict:
        """Every panel and chart emptied before a run of ``selected`` (or when a link's settings replace what
        the page showed): waiting, not selected, or unavailable here."""
        return {self.status: "", self.share: "", self.downloads: None,
                **render_run(self, {"results": [], "phase": "ready"}, selected)}

    def outputs(self) -> list:
        """Every component a run updates (its status, charts, result, link, reports and each backend's panel)."""
        return [self.status, self.summary, self.chart, self.quality_chart, self.position_chart, self.where_chart,
                self.result_json, self.share, self.downloads,
                *(c for p in self.backends for c in (p.header, p.answer, p.metrics))]


def model_notes(model: str) -> str:
    entry = find_catalog_model(model or "")
    if entry is not None:
        return f"**{entry.title}** — prompt format `{entry.prompt_format}`. {entry.notes}"
    if not model:
        return ""
    return (f"`{model}`: loaded as a Hugging Face hub id, or as a local directory if one exists at that path "
            "(folders written by `save_pretrained`).")


def build_text_tab(arena: Arena) -> TextTab:
    """Lay out the tab and wire its events to the arena."""
    backend_options = arena.backend_options()
    public, field = arena.policy.public, TextRunRequest.field
    with gr.Row(equal_height=False, elem_classes=["arena-layout"]):
        with gr.Column(scale=1, min_width=360):
            model = gr.Dropdown(
                choices=[(entry.title, entry.key) for entry in CATALOG], value=field("model").default,
                allow_custom_value=True, label=field("model").label, elem_id="text-model",
                info="Pick one, or type any Hugging Face hub id" + ("." if public else
                                                                      " or local directory of a causal LM."))
            notes = gr.Markdown(model_notes(field("model").default), elem_classes=["arena-notes"])
            prompt_format = gr.Dropdown(choices=[(f.label, f.name) for f in PROMPT_FORMATS.values()],
                                        value=field("prompt_format").default, label=field("prompt_format").label)
            controls = ctl.build_backend_controls(backend_options, "", "text", allow_paths=not public)
            widgets = {"model": model, "prompt_format": prompt_format}
            for info in TextRunRequest.fields():
                if info.name not in widgets and info.kind != "backends" and info.name not in ("prompt", "reference") \
                        and info.group != "timing":
                    widgets[info.name] = ctl.field_widget(info, arena.policy, elem_id=f"text-{info.name}")
            widgets["reference"] = ctl.reference_dropdown(backend_options, "text-reference", "text")
            with gr.Accordion("Timing protocol", open=False):
                for info in TextRunRequest.fields():
                    if info.group == "timing":
                        widgets[info.name] = ctl.field_widget(info, arena.policy, elem_id=f"text-{info.name}")
        with gr.Column(scale=3):
            prompt = gr.Textbox(EXAMPLE_PROMPTS[0], lines=3, label=field("prompt").label, elem_id="prompt")
            widgets["prompt"] = prompt
            estimate = gr.Markdown(arena.prompt_estimate(field("model").default, EXAMPLE_PROMPTS[0], 0, []),
                                   elem_id="prompt-estimate", elem_classes=["arena-notes"])
            ctl.example_prompts(prompt, EXAMPLE_PROMPTS, "text-examples")
            with gr.Row(elem_id="text-demos"):
                demo_broken = gr.Button(BROKEN_TEXT, size="sm", elem_id="demo-broken-text")
                demo_good = gr.Button(GOOD_TEXT, size="sm", elem_id="demo-good-text")
            run, stop, status, summary, share = ctl.run_row("text", "run-status")
            panels = []
            # The panels' rows line up across backends (header, answer, metrics): assets/arena.css, .arena-panels.
            with gr.Row(equal_height=True, elem_classes=["arena-panels"]):
                for control in controls:
                    name = control.name
                    with gr.Column(elem_id=f"panel-{name}", elem_classes=["arena-panel"]):
                        header = gr.Markdown(panel_header(control.title, None,
                                                         "unavailable" if control.unavailable else "idle"),
                                             elem_classes=["arena-panel-head"])
                        answer = gr.Textbox(label="Answer", lines=8, interactive=False, elem_id=f"answer-{name}",
                                            buttons=["copy"], elem_classes=["arena-panel-body"])
                        metrics = gr.Markdown(control.unavailable, elem_id=f"metrics-{name}",
                                              elem_classes=["arena-panel-metrics"])
                    panels.append(BackendControls(name, control.title, control, header, answer, metrics))
            chart = gr.Plot(text_latency_figure({}), label="Latency", elem_id="latency-chart")
            quality_chart = gr.Plot(speed_quality_figure({}), label="Speed against quality",
                                    elem_id="speed-quality-chart")
            position_chart = gr.Plot(position_kl_figure({}), label="Where in the sequence",
                                     elem_id="position-kl-chart")
            where_chart = gr.Plot(where_figure({}), label="Where did it break", elem_id="where-chart")
            downloads = gr.File(label="Reports of this run (Markdown for an issue, JSON, CSV)", file_count="multiple",
                                interactive=False, elem_id="downloads-text")
            with gr.Accordion("Structured result (JSON, same as the /compare_text API)", open=False):
                result_json = gr.JSON(label="Result")
    tab = TextTab(widgets, notes, run, stop, status, panels, chart, quality_chart, result_json, share=share,
                  downloads=downloads, position_chart=position_chart, where_chart=where_chart, summary=summary)

    def execute(request: TextRunRequest, http: gr.Request, cancel, progress, example: bool = False):
        selected = {spec.backend for spec in request.backends}
        # The page keeps the last result until this run gets past preparation: a refusal (a bad model id, an
        # empty prompt) says why on the status line and wipes nothing.
        yield {tab.status: "Preparing the model and the shared input…"}
        runs = (arena.run_example if example else arena.run_text)(request, progress=progress, cancel=cancel)
        yield from show_and_keep(arena, tab, "text", runs, lambda result: render_run(
            tab, arena.public_view(result.to_dict()), selected) | moved_on(tab, result), http)

    runs = ctl.wire_run(arena, tab, TextRunRequest, tab.backends, execute, model_notes,
                        ((demo_broken, demo_good), arena.demos.text_request))
    wire_estimate(arena, tab, estimate, runs)
    return tab


def wire_estimate(arena: Arena, tab: TextTab, estimate: gr.Markdown, runs: list) -> None:
    """The line under the prompt: its token count and, once this server has timed the model, how long each ticked
    backend will take (`Arena.prompt_estimate`); it follows the prompt, the model, the length and the ticks, and
    each finished run's new rates."""
    boxes = [panel.controls.enabled for panel in tab.backends]
    inputs = [tab.fields["model"], tab.fields["prompt"], tab.fields["max_new_tokens"], *boxes]

    def update(model, prompt, max_new_tokens, *ticked):
        names = [panel.name for panel, on in zip(tab.backends, ticked, strict=True) if on]
        try:
            return arena.prompt_estimate(str(model or ""), str(prompt or ""), int(max_new_tokens or 0), names)
        except (TypeError, ValueError):
            return ""

    quiet = {"api_visibility": "private", "show_progress": "hidden", "queue": False}
    for component in inputs[:3]:
        component.change(update, inputs, estimate, trigger_mode="always_last", **quiet)
    for box in boxes:
        box.change(update, inputs, estimate, **quiet)
    for event in runs:
        event.then(update, inputs, estimate, **quiet)


def render_run(tab: TextTab, run: dict[str, Any], selected: set[str]) -> dict:
    """Updates for every output from the run's current (possibly partial) result. While a backend generates,
    only its panel changes: its answer so far (the charts and the JSON wait for results)."""
    streaming = run.get("streaming")
    if streaming:
        panel = next((p for p in tab.backends if p.name == streaming["backend"]), None)
        if panel is None:
            return {}
        return {panel.header: panel_header(panel.title, None, "generating",
                                           f"{streaming['tokens']}/{streaming['of']}"),
                panel.answer: gr.update(value=streaming["text"], visible=True)}
    if run.get("error") and not run["results"]:  # refused or failed before any backend ran: the page stays
        return {tab.status: run_summary(run)}
    by_backend = {r["backend"]: r for r in run["results"]}
    index = run.get("reference_index")
    reference = run["results"][index] if index is not None and index < len(run["results"]) else None
    reference_text = reference["text"] if reference and not reference.get("error") else None
    updates: dict = {tab.status: run_summary(run) if run["results"] or run.get("error") else
                     "" if run.get("phase") == "ready" else "Running…",
                     tab.summary: summary_table(run, "text"),
                     tab.chart: text_latency_figure(run), tab.quality_chart: speed_quality_figure(run),
                     tab.position_chart: position_kl_figure(run), tab.where_chart: where_figure(run),
                     tab.result_json: json.loads(json.dumps(run, default=str))}
    for panel in tab.backends:
        result = by_backend.get(panel.name)
        state, idle = idle_panel(panel.name, selected, panel.controls.unavailable, bool(run.get("error")),
                                 ready=run.get("phase") == "ready")
        updates[panel.header] = panel_header(panel.title, result, state)
        # A backend that is not in this run (not selected, or unavailable here), or that a stopped run never
        # reached, is its one-line header (and why): no empty answer box.
        never_ran = result is not None and result.get("stopped") and not result.get("text")
        updates[panel.answer] = gr.update(value=result["text"] if result else "",
                                          visible=not never_ran and (result is not None or state == "waiting"))
        updates[panel.metrics] = panel_metrics(result, None if result is reference else reference_text) \
            if result else idle
    return updates
