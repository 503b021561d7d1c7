"""The Gradio UI. `build_ui(arena)` returns the Blocks without launching, so tests can build it serverless."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from arena import Arena, carries_settings
from ui.api import register_api
from ui.controls import session_of
from ui.environment_tab import build_environment_tab
from ui.history_tab import build_history_tab, wire_history
from ui.image_tab import build_image_tab
from ui.load_tab import build_load_tab
from ui.share import wire_link_fill
from ui.stored_run import stored_image_updates, stored_text_updates
from ui.text_tab import build_text_tab

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def build_ui(arena: Arena, warm_up=None) -> gr.Blocks:
    """Lay out the whole dashboard around one arena core (``warm_up``: an `arena.running.warmup.WarmUp` to report
    on)."""
    with gr.Blocks(title="Backend Arena") as demo:
        gr.Markdown("# Backend Arena\nThe same prompt through PyTorch, ONNX Runtime and TensorRT, side by side: "
                    "do the conversions still talk sense, draw the picture, and are they faster? Each backend "
                    "gets a verdict against the reference.")
        if arena.policy.public:
            gr.Markdown(arena.policy.describe(), elem_id="public-limits", elem_classes=["arena-notes"])
        if warm_up is not None:
            _warm_up_line(warm_up)
        link_note = gr.Markdown("", elem_id="link-note")
        with gr.Tabs() as tabs:
            with gr.Tab("Text", id="text"):
                text = build_text_tab(arena)
            with gr.Tab("Image", id="image"):
                image = build_image_tab(arena)
            with gr.Tab("Load", id="load"):
                build_load_tab(arena)
            with gr.Tab("History", id="history") as history_page:
                history = build_history_tab(arena)
            with gr.Tab("Environment", id="environment"):
                build_environment_tab(arena)
        wire_history(arena, history, history_page, text, image, tabs)
        wire_link_fill(demo, arena, text, image, tabs, link_note)
        register_api(arena)
        # Until the visitor runs their own, the panels show a real run of the defaults that ships with the repo.
        # A settings link shows its own settings instead (`ui.share.wire_link_fill`). Page-load events show no
        # progress on their outputs: Gradio left the widgets of the tab not shown at load "pending" until it was
        # first opened, then greyed them for seconds.
        for tab, stored in ((text, stored_text_updates), (image, stored_image_updates)):
            demo.load(unless_link(stored, tab), None, tab.outputs(), api_visibility="private", show_progress="hidden",
                      show_progress_on=[link_note])
        # Client-side only: disable the radio choices the server labelled unavailable.
        demo.load(None, js=(ASSETS / "arena.js").read_text(), api_visibility="private")
        # A visitor who closes the page does not leave their run holding the queue (nor, in public mode, their
        # kept runs in memory).
        def on_unload(request: gr.Request):
            arena.stop(session_of(request), wait_s=0)
            arena.history.forget(session_of(request))

        demo.unload(on_unload)
    return demo


def unless_link(stored, tab):
    """On page load: the stored run's updates for ``tab``, unless the page was opened from a settings link."""
    def load(request: gr.Request) -> dict:
        if carries_settings(dict(getattr(request, "query_params", None) or {})):
            return {tab.status: gr.update()}
        return stored(tab)

    return load


# The console's marks for the start-up line, as the page's badges (a phone without an emoji font drew boxes).
WARM_UP_BADGES = {"⏳": ("waiting", "PREPARING"), "✅": ("ok", "READY"), "⚠️": ("error", "PROBLEM")}


def warm_up_markdown(status: str) -> str:
    for mark, (kind, word) in WARM_UP_BADGES.items():
        if status.startswith(mark):
            return f"<span class='arena-badge arena-badge-{kind}'>{word}</span> {status[len(mark):].strip()}"
    return status


def _warm_up_line(warm_up) -> None:
    """A status line that follows the start-up preparation every 2 s, and stops polling once it is done."""
    line = gr.Markdown(warm_up_markdown(warm_up.status()), elem_id="warm-up-status")
    timer = gr.Timer(2.0, active=not warm_up.done)
    timer.tick(lambda: (warm_up_markdown(warm_up.status()), gr.Timer(active=not warm_up.done)), None,
               [line, timer], api_visibility="private", queue=False)


def launch_options() -> dict:
    """Theme and CSS go to launch() in Gradio 6."""
    return {"theme": gr.themes.Soft(), "css_paths": [ASSETS / "arena.css"]}
