"""The Gradio UI. `build_ui(arena)` returns the Blocks without launching, so tests can build it serverless."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from arena.core import Arena
from ui.api import register_api
from ui.environment_tab import build_environment_tab
from ui.image_tab import build_image_tab
from ui.text_tab import build_text_tab

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def build_ui(arena: Arena) -> gr.Blocks:
    """Lay out the whole dashboard around one arena core."""
    with gr.Blocks(title="Backend Arena") as demo:
        gr.Markdown("# Backend Arena\nThe same prompt through PyTorch, ONNX Runtime and TensorRT, side by side: "
                    "do the conversions still talk sense, draw the picture, and are they faster? Each backend "
                    "gets a verdict against the reference.")
        with gr.Tabs():
            with gr.Tab("Text", id="text"):
                build_text_tab(arena)
            with gr.Tab("Image", id="image"):
                build_image_tab(arena)
            with gr.Tab("Environment", id="environment"):
                build_environment_tab(arena)
        register_api(arena)
        # Client-side only: disable the radio choices the server labelled unavailable.
        demo.load(None, js=(ASSETS / "arena.js").read_text(), api_visibility="private")
    return demo


def launch_options() -> dict:
    """Theme and CSS go to launch() in Gradio 6."""
    return {"theme": gr.themes.Soft(), "css_paths": [ASSETS / "arena.css"]}
