""""See a broken conversion" in both tabs and the API: the server builds the request itself (its own broken
export of the default model, `arena.preparing.demos`), so a visitor never passes a path."""

from __future__ import annotations

import gradio as gr

from arena.core import Arena
from arena.errors import ArenaError
from ui.controls import RUN_CONCURRENCY_ID, session_of

BROKEN_TEXT = "Example: a broken conversion (ONNX export with damaged attention and MLP weights)"
GOOD_TEXT = "Example: the good conversion"
BROKEN_IMAGE = "Example: a broken conversion (VAE decoder that overflows, like fp16 without upcast)"
GOOD_IMAGE = "Example: the good conversion"


def _error(exc: Exception) -> str:
    return f"<span class='arena-badge arena-badge-error'>ERROR</span> The example could not be prepared: {exc}"


def wire_demos(arena: Arena, tab, buttons: tuple[gr.Button, gr.Button], prepare, run) -> None:
    """A tab's two example buttons: ``prepare(broken, progress)`` builds the server's request (the broken export
    made and cached the first time), ``run(request, http, cancel, progress)`` (the tab's) yields its updates."""
    def make(broken: bool):
        def run_example(http: gr.Request, progress=gr.Progress()):
            yield {tab.status: "Preparing the example (the first time, the broken export is made and cached)…",
                   tab.share: "", tab.downloads: None}
            try:
                request = prepare(broken, progress=lambda f, d: progress(f, desc=d))
            except (ArenaError, OSError) as exc:
                yield {tab.status: _error(exc)}
                return
            with arena.stoppable(session_of(http)) as cancel:
                yield from run(request, http, cancel, lambda f, d: progress(f, desc=d))

        return run_example

    for button, broken in zip(buttons, (True, False), strict=True):
        button.click(make(broken), None, tab.outputs(), api_visibility="private", concurrency_limit=1,
                     concurrency_id=RUN_CONCURRENCY_ID, show_progress_on=[tab.status])


def make_example_text(arena: Arena):
    def example_text(broken: bool = True, request: gr.Request = None) -> dict:
        """The default text model through PyTorch and ONNX Runtime, where ONNX Runtime runs an export the server
        broke on purpose (noise in its attention and MLP weights): GIBBERISH next to PyTorch's MATCH.

        Args:
            broken: True: the broken export; False: the good export (both MATCH).
        """
        try:
            run = arena.demos.text_request(bool(broken))
        except (ArenaError, OSError) as exc:
            return {"error": f"The example could not be prepared: {exc}", "results": []}
        with arena.stoppable(session_of(request)) as cancel:
            return arena.public_view(arena.run_text_to_end(run, cancel=cancel).to_dict())

    return example_text


def make_example_image(arena: Arena):
    def example_image(broken: bool = True, request: gr.Request = None) -> dict:
        """The default image model through PyTorch and ONNX Runtime, where ONNX Runtime runs a pipeline export whose
        VAE decoder the server made overflow on purpose: NAN next to PyTorch's MATCH.

        Args:
            broken: True: the broken export; False: the good export (both MATCH).
        """

        try:
            run = arena.demos.image_request(bool(broken))
        except (ArenaError, OSError) as exc:
            return {"error": f"The example could not be prepared: {exc}", "results": []}
        with arena.stoppable(session_of(request)) as cancel:
            return arena.public_view(arena.run_image_to_end(run, cancel=cancel).to_dict())

    return example_image


def register_example_api(arena: Arena) -> None:
    """``/example_text`` and ``/example_image``: the broken-conversion examples for API clients."""
    for fn, name in ((make_example_text(arena), "example_text"), (make_example_image(arena), "example_image")):
        gr.api(fn, api_name=name, concurrency_limit=1, concurrency_id=RUN_CONCURRENCY_ID)
