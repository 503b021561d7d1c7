"""Backend widgets come from the backend's Options: a backend the UI has never heard of gets its controls."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from backends.contract import AVAILABLE, Availability, Backend, BackendOptions, option
from ui.controls import build_backend_controls, specs_from_form


@dataclass(frozen=True)
class ToyOptions(BackendOptions):
    quant: str = option("q8", choices=("q4", "q8"), help="Weights.")
    model_file: str | None = option(None, kind="path", label="Model file", placeholder="/path/to/model.gguf")
    base_url: str | None = option(None, kind="url", label="Server URL")
    vision: bool = option(False, kind="bool", tasks=("image",))


class ToyBackend(Backend):  # never loaded: only its class side is read
    name, title, Options = "toy", "Toy", ToyOptions

    @classmethod
    def availability(cls, env) -> Availability:
        return AVAILABLE

    load = generate_text = generate_image = runtime_info = unload = None


def options_of(cls):
    return {cls.name: {"title": cls.title, "availability": cls.availability({}), "options": cls.options({}),
                       "fields": cls.Options.fields_info(), "tasks": cls.tasks}}


def test_widgets_are_built_from_the_options():
    with gr.Blocks():
        text = build_backend_controls(options_of(ToyBackend), "", "text")[0]
        image = build_backend_controls(options_of(ToyBackend), "image-", "image", allow_paths=False)[0]
    assert list(text.widgets) == ["quant", "model_file", "base_url"]
    assert isinstance(text.widgets["quant"], gr.Radio) and text.widgets["quant"].value == "q8"
    assert text.widgets["quant"].elem_id == "toy-quant" and text.enabled.elem_id == "enable-toy"
    assert isinstance(text.widgets["model_file"], gr.Textbox)
    assert text.widgets["model_file"].placeholder == "/path/to/model.gguf"
    # Public mode: no path or URL fields; the image-only flag shows on the Image tab.
    assert list(image.widgets) == ["quant", "vision"] and isinstance(image.widgets["vision"], gr.Checkbox)
    assert image.widgets["vision"].elem_id == "image-toy-vision"


def test_form_values_become_specs_through_the_options():
    specs = specs_from_form({"pytorch": {"enabled": True, "device": "cpu", "precision": "bf16"},
                             "onnxruntime": {"enabled": True, "provider": "auto", "precision": "fp32",
                                             "onnx_dir": ""},
                             "tensorrt": {"enabled": False, "precision": "fp32"}})
    assert [s.label for s in specs] == ["PyTorch · cpu · bf16", "ONNX Runtime · auto · fp32"]
