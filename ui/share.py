"""Filling a tab's form from settings: a link's query parameters on page load, or a kept run ("Run again")."""

from __future__ import annotations

import gradio as gr

from arena import ImageRunRequest, TextRunRequest, request_from_query, request_of
from ui.controls import backend_updates, form_updates

# After the form is filled, press that tab's Run button (the visible one) in the browser.
PRESS_RUN_JS = """() => { setTimeout(() => {
  const button = ['#run-text', '#run-image'].map((s) => document.querySelector(s))
    .find((b) => b && b.offsetParent !== null);
  if (button) button.click();
}, 300); }"""


def form_outputs(text, image, tabs) -> list:
    """Every component a fill may change: each tab's field widgets and backend controls, and the tab switch."""
    out = [*text.fields.values(), *image.fields.values(), tabs]
    for panel in [*text.backends, *image.panels]:
        out += [panel.controls.enabled, *panel.controls.widgets.values()]
    return out


def fill_updates(text, image, tabs, task: str, request: TextRunRequest | ImageRunRequest) -> dict:
    """A request's fields and backends into its tab's form (`form_updates`), and that tab selected."""
    tab = next(tab for tab in (text, image) if tab.task == task)
    return (form_updates(tab.fields, request) | backend_updates(tab.form_panels, request.backends)
            | {tabs: gr.Tabs(selected=task)})


def wire_link_fill(demo: gr.Blocks, arena, text, image, tabs, note: gr.Markdown) -> None:
    """On page load: a result link (``?run=<id>``) shows that kept run, its answers (or pictures) and verdicts, with
    its form filled to run it again; a settings link (``?tab=text&model=..&prompt=..&backends=[..]``) fills that
    tab's form. Both are read through the same request types as the form; the public gate applies when the run
    starts."""

    def fill(request: gr.Request):
        params = dict(getattr(request, "query_params", None) or {})
        if "run" in params:
            return kept_result(params["run"], request)
        try:
            found = request_from_query(params)
        except ValueError as exc:
            return {note: f"<span class='arena-badge arena-badge-error'>LINK</span> {exc}"}
        if found is None:  # no link: change nothing (an empty dict would be one output value, an error badge)
            return {note: gr.update()}
        task, run = found
        tab = next(tab for tab in (text, image) if tab.task == task)
        # The panels show no earlier run (not the stored one): what they will show is this link's, once run.
        idle = tab.idle_updates({spec.backend for spec in run.backends}) | {tab.status: ""}
        return {note: f"<span class='arena-badge arena-badge-ok'>LINK</span> The {task} settings from your link "
                      "are filled in: press Run.", **fill_updates(text, image, tabs, task, run), **idle}

    def kept_result(entry_id: str, request: gr.Request) -> dict:
        from ui.downloads import link_markdown

        found = arena.history.find(entry_id)
        if found is None:
            return {note: "<span class='arena-badge arena-badge-error'>LINK</span> This link's result is not kept "
                          "on this server (any more): a server keeps its newest runs only, and forgets them when it "
                          "restarts. Ask for the settings link, or run the comparison here."}
        entry, pictures = found
        run = entry.run
        selected = {r.get("backend") for r in run.get("results") or []}
        tab = next(tab for tab in (text, image) if tab.task == entry.task)
        try:
            filled = fill_updates(text, image, tabs, entry.task, request_of(entry.task, run))
        except (ValueError, TypeError, KeyError):
            filled = {tabs: gr.Tabs(selected=entry.task)}  # kept by another version: shown, not refillable
        shown = tab.render_dict(run, list(pictures), selected)
        summary = tab.summary_text(run)
        shown[tab.status] = (f"<span class='arena-badge arena-badge-idle'>LINKED RESULT</span> Run on "
                             f"{entry.created} (server time), as its link keeps it; Run runs it again here.\n\n"
                             + summary)
        shown[tab.share] = link_markdown(entry.task, run, request, entry.id)
        return {note: "", **filled, **shown}

    # Progress on the note only: the outputs include the Image tab's widgets, which Gradio left "pending" until
    # that tab was first opened, then greyed for seconds (tests/test_browser_ui.py).
    demo.load(fill, None, [note, *form_outputs(text, image, tabs), *text.outputs(), *image.outputs()],
              api_visibility="private", show_progress="hidden", show_progress_on=[note])
