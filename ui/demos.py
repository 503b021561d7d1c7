""""See a broken conversion" in the API (the tabs' buttons are wired by `ui.controls.wire_run`): the server
builds the request itself (its own broken export of the default model, `arena.preparing.demos`), so a visitor
never passes a path."""

from __future__ import annotations

import gradio as gr

from arena import Arena, ArenaError, task_of
from ui.controls import RUN_CONCURRENCY_ID, session_of

BROKEN_TEXT = "Example: a broken conversion (ONNX export with damaged attention and MLP weights)"
GOOD_TEXT = "Example: the good conversion"
BROKEN_IMAGE = "Example: a broken conversion (VAE decoder that overflows, like fp16 without upcast)"
GOOD_IMAGE = "Example: the good conversion"


EXAMPLE_DOCS = {
    "text": "The default text model through PyTorch and ONNX Runtime, where ONNX Runtime runs an export the server "
            "broke on purpose (noise in its attention and MLP weights): GIBBERISH next to PyTorch's MATCH.",
    "image": "The default image model through PyTorch and ONNX Runtime, where ONNX Runtime runs a pipeline export "
             "whose VAE decoder the server made overflow on purpose: NAN next to PyTorch's MATCH.",
}


def make_example(arena: Arena, task: str):
    """``/example_text`` or ``/example_image``: the server's own request (no path from the caller), run to the end."""
    prepare = task_of(task).step(arena.demos, "{}_request")

    def run_to_end(run, cancel):
        final = None
        for final in arena.run_example(run, cancel=cancel):  # noqa: B007 - the last one is the result
            pass
        return final

    def example(broken: bool = True, request: gr.Request = None) -> dict:
        try:
            run = prepare(bool(broken))
        except (ArenaError, OSError) as exc:
            return {"error": f"The example could not be prepared: {exc}", "results": []}
        with arena.stoppable(session_of(request)) as cancel:
            return arena.public_view(run_to_end(run, cancel=cancel).to_dict())

    example.__name__ = f"example_{task}"
    example.__doc__ = (f"{EXAMPLE_DOCS[task]} An example this server already ran answers with that result at once "
                       "(`kept_at` says when it ran).\n\nArgs:\n    broken: True: the broken export; False: the good "
                       "export (both MATCH).")
    return example


def register_example_api(arena: Arena) -> None:
    """``/example_text`` and ``/example_image``: the broken-conversion examples for API clients."""
    for task in ("text", "image"):
        gr.api(make_example(arena, task), api_name=f"example_{task}", concurrency_limit=1,
               concurrency_id=RUN_CONCURRENCY_ID)
