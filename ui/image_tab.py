"""The Image tab: one prompt, one seed, the same latents and scheduler through every backend, side by side."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from arena import (
    IMAGE_CATALOG,
    IMAGE_EXAMPLE_PROMPTS,
    Arena,
    ImageRunRequest,
    ImageRunResult,
    difference_heatmap,
    find_image_catalog_model,
)
from ui import controls as ctl
from ui.charts import image_latency_figure, where_figure
from ui.demos import BROKEN_IMAGE, GOOD_IMAGE
from ui.downloads import moved_on, show_and_keep
from ui.format import idle_panel, image_metrics, image_summary, panel_header, summary_table

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ImagePanel:
    name: str
    title: str
    controls: ctl.BackendOptionControls
    header: gr.Markdown
    image: gr.Image
    heatmap: gr.Image
    metrics: gr.Markdown


@dataclass
class ImageTab:
    fields: dict[str, gr.components.Component]  # one widget per request field (`ImageRunRequest.fields()`)
    model_notes: gr.Markdown
    run: gr.Button
    stop: gr.Button
    status: gr.Markdown
    panels: list[ImagePanel]
    slider: gr.ImageSlider
    chart: gr.Plot
    result_json: gr.JSON
    share: gr.Markdown | None = None  # after a run: the link to its settings
    downloads: gr.File | None = None  # after a run: its reports (and difference heatmaps)
    where_chart: gr.Plot | None = None  # each component's error on the reference's inputs: which one breaks
    summary: gr.HTML | None = None  # under the status line: one row per backend (`format.summary_table`)

    task = "image"

    @property
    def model(self) -> gr.components.Component:
        return self.fields["model"]

    @property
    def form_panels(self) -> list[ImagePanel]:
        return self.panels

    def render_dict(self, run: dict[str, Any], pictures: list, selected: set[str]) -> dict:
        """A kept run's updates, its pictures in its results' order (missing ones None)."""
        count = len(run.get("results") or [])
        return render_image_dict(self, run, (list(pictures) + [None] * count)[:count], selected)

    @staticmethod
    def summary_text(run: dict[str, Any]) -> str:
        return image_summary(run)

    def idle_updates(self, selected: set[str]) -> dict:
        """Every panel emptied before a run of ``selected`` (or when a link's settings replace what the page
        showed): waiting, not selected, or unavailable here."""
        updates = {self.status: "", self.summary: "", self.slider: None, self.share: "", self.downloads: None,
                   self.chart: image_latency_figure({}), self.result_json: None}
        if self.where_chart is not None:
            updates[self.where_chart] = where_figure({})
        for p in self.panels:
            state, metrics = idle_panel(p.name, selected, p.controls.unavailable, ready=True)
            updates |= {p.header: panel_header(p.title, None, state), p.metrics: metrics,
                        p.image: gr.update(value=None, visible=state == "waiting"),
                        p.heatmap: gr.update(value=None, visible=state == "waiting")}
        return updates

    def outputs(self) -> list:
        """Every component a run updates (its status, slider, chart, result, link, reports and each panel)."""
        return [self.status, self.summary, self.slider, self.chart, self.result_json, self.share, self.downloads,
                *([self.where_chart] if self.where_chart is not None else []),
                *(c for p in self.panels for c in (p.header, p.image, p.heatmap, p.metrics))]


def image_model_notes(model: str) -> str:
    entry = find_image_catalog_model(model or "")
    if entry is not None and entry.embedded_dir and not (ROOT / entry.embedded_dir / "model_index.json").is_file():
        return (f"**{entry.title}** is missing from {entry.embedded_dir}: restore it from git or run "
                "`.venv/bin/python scripts/train_image_model.py` "
                "(about 55 minutes on 2 cores), or type a diffusers hub id or local pipeline folder.")
    if entry is not None:
        return f"**{entry.title}** — {entry.steps} steps, guidance {entry.guidance_scale} suggested. {entry.notes}"
    return (f"`{model}`: loaded as a diffusers pipeline folder or hub id (model_index.json, text_encoder/, "
            "tokenizer/, unet/, vae/, scheduler/).") if model else ""


def build_image_tab(arena: Arena) -> ImageTab:
    """Lay out the tab and wire its events to the arena."""
    backend_options = arena.backend_options()
    public, field = arena.policy.public, ImageRunRequest.field
    with gr.Row(equal_height=False, elem_classes=["arena-layout"]):
        with gr.Column(scale=1, min_width=360):
            model = gr.Dropdown(choices=[(e.title, e.key) for e in IMAGE_CATALOG], value=field("model").default,
                                allow_custom_value=True, label=field("model").label, elem_id="image-model",
                                info="Pick one, or type a diffusers hub id" + ("." if public else
                                                                                " or local pipeline folder."))
            notes = gr.Markdown(image_model_notes(field("model").default), elem_classes=["arena-notes"])
            controls = ctl.build_backend_controls(backend_options, "image-", "image", allow_paths=not public)
            widgets = {"model": model,
                       "reference": ctl.reference_dropdown(backend_options, "image-reference", "image")}
        with gr.Column(scale=3):
            widgets["prompt"] = gr.Textbox(IMAGE_EXAMPLE_PROMPTS[0], lines=2, label=field("prompt").label,
                                           elem_id="image-prompt")
            widgets["negative_prompt"] = gr.Textbox("", label=field("negative_prompt").label,
                                                    elem_id="image-negative")
            ctl.example_prompts(widgets["prompt"], IMAGE_EXAMPLE_PROMPTS, "image-examples")
            with gr.Row(elem_id="image-demos"):
                demo_broken = gr.Button(BROKEN_IMAGE, size="sm", elem_id="demo-broken-image")
                demo_good = gr.Button(GOOD_IMAGE, size="sm", elem_id="demo-good-image")
            with gr.Row():
                for info in ImageRunRequest.fields():
                    if info.name not in widgets and info.kind != "backends":
                        widgets[info.name] = ctl.field_widget(info, arena.policy, elem_id=f"image-{info.name}")
            run, stop, status, summary, share = ctl.run_row("image", "image-status")
            gr.HTML("<div class='arena-notes' id='heatmap-scale'>Under each image, its difference to the "
                    "reference: <span class='arena-scale-bar'></span> black: the same pixel; red, then yellow: "
                    "up to 64 or more levels (of 255) apart, averaged over red, green and blue.</div>")
            panels = []
            # The panels' rows line up across backends (header, image, heatmap, metrics): assets/arena.css.
            with gr.Row(equal_height=True, elem_classes=["arena-panels", "arena-panels-image"]):
                for control in controls:
                    with gr.Column(elem_id=f"image-panel-{control.name}", elem_classes=["arena-panel"]):
                        header = gr.Markdown(panel_header(control.title, None,
                                                         "unavailable" if control.unavailable else "idle"),
                                             elem_classes=["arena-panel-head"])
                        image = gr.Image(label="Image", type="numpy", interactive=False, height=256,
                                         elem_id=f"image-{control.name}",
                                         elem_classes=["arena-pixelated", "arena-panel-body"])
                        heatmap = gr.Image(label="Difference to the reference", type="numpy", interactive=False,
                                           height=128, elem_id=f"heatmap-{control.name}", show_label=False,
                                           elem_classes=["arena-pixelated", "arena-panel-heatmap"])
                        metrics = gr.Markdown(control.unavailable, elem_id=f"image-metrics-{control.name}",
                                              elem_classes=["arena-panel-metrics"])
                    panels.append(ImagePanel(control.name, control.title, control, header, image, heatmap, metrics))
            slider = gr.ImageSlider(label="Left: the reference · right: the first candidate (drag the bar)",
                                    type="numpy", height=320, elem_id="image-slider",
                                    elem_classes=["arena-pixelated"])
            chart = gr.Plot(image_latency_figure({}), label="Latency", elem_id="image-latency-chart")
            where_chart = gr.Plot(where_figure({}), label="Where did it break (text encoder, UNet, VAE decoder)",
                                  elem_id="image-where-chart")
            downloads = gr.File(label="Reports of this run (Markdown for an issue, JSON, CSV, heatmaps)",
                                file_count="multiple", interactive=False, elem_id="downloads-image")
            with gr.Accordion("Structured result (JSON, same as the /compare_image API)", open=False):
                result_json = gr.JSON(label="Result")
    tab = ImageTab(widgets, notes, run, stop, status, panels, slider, chart, result_json, share=share,
                   downloads=downloads, where_chart=where_chart, summary=summary)
    def execute(request: ImageRunRequest, http: gr.Request, cancel, progress, example: bool = False):
        selected = {spec.backend for spec in request.backends}
        # The page keeps the last result until this run gets past preparation: a refusal (a bad model id, an
        # empty prompt) says why on the status line and wipes nothing.
        yield {tab.status: "Preparing the model and the shared input…"}
        runs = (arena.run_example if example else arena.run_image)(request, progress=progress, cancel=cancel)
        yield from show_and_keep(arena, tab, "image", runs, lambda result: render_image_run(
            tab, result, selected, arena.public_view) | moved_on(tab, result), http)

    ctl.wire_run(arena, tab, ImageRunRequest, tab.panels, execute, image_model_notes,
             ((demo_broken, demo_good), arena.demos.image_request))
    return tab


def render_image_run(tab: ImageTab, result: ImageRunResult, selected: set[str], view=lambda data: data) -> dict:
    """``view``: what a visitor may see of the result dict (`Arena.public_view`)."""
    return render_image_dict(tab, view(result.to_dict()), [r.image for r in result.results], selected)


def render_image_dict(tab: ImageTab, run: dict[str, Any], images: list, selected: set[str]) -> dict:
    """Updates for every output from a result dict and its images (a live run's, or the stored one's)."""
    if run.get("error") and not run["results"]:  # refused or failed before any backend ran: the page stays
        return {tab.status: image_summary(run)}
    by_backend = {d["backend"]: (image, d) for image, d in zip(images, run["results"], strict=True)}
    index = run.get("reference_index")
    reference = images[index] if index is not None and index < len(images) else None
    others = [image for i, image in enumerate(images) if image is not None and i != index]
    updates: dict = {tab.status: image_summary(run) if run["results"] or run.get("error") else "Running…",
                     tab.summary: summary_table(run, "image"),
                     tab.chart: image_latency_figure(run), tab.result_json: json.loads(json.dumps(run, default=str)),
                     **({tab.where_chart: where_figure(run)} if tab.where_chart is not None else {}),
                     # No pair to slide between (the other backend failed): no empty box either.
                     tab.slider: gr.update(value=(reference, others[0]) if reference is not None and others else None,
                                           visible=reference is not None and bool(others))}
    for panel in tab.panels:
        found = by_backend.get(panel.name)
        state, idle = idle_panel(panel.name, selected, panel.controls.unavailable, bool(run.get("error")))
        updates[panel.header] = panel_header(panel.title, found[1] if found else None, state)
        image = found[0] if found else None
        shown = found is not None or state == "waiting"  # out of this run: its one-line header only
        # A result without an image (a NaN it refused to draw, an error) shows its reason, not an empty box.
        shown = shown and (image is not None or found is None)
        updates[panel.image] = gr.update(value=image, visible=shown)
        comparable = image is not None and reference is not None and image is not reference \
            and image.shape == reference.shape
        # The reference (and a backend without an image) has no difference to show: no empty box.
        updates[panel.heatmap] = gr.update(value=difference_heatmap(reference, image) if comparable else None,
                                           visible=shown and (comparable or found is None))
        updates[panel.metrics] = image_metrics(found[1]) if found else idle
    return updates
