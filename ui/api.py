"""Endpoints for gradio_client: the same core as the UI, returning the structured result as JSON."""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import gradio as gr

from arena import (
    DEFAULT_BACKENDS,
    Arena,
    CheckRequest,
    FieldInfo,
    ImageRunRequest,
    TextRunRequest,
    api_docstring,
    api_parameters,
    api_signature,
)
from ui.controls import RUN_CONCURRENCY_ID, is_mcp, session_of
from ui.demos import register_example_api


def request_function(request_cls, name: str, summary: str, returns: str, run: Callable[[dict, Any], Any],
                     return_annotation: Any = dict):
    """An API function whose parameters are the request's declared fields (`arena.fields.api_signature`), in the
    API's order (the required ones first: the prompt, a check's model and candidate), with their defaults, types
    and help (Gradio reads the signature for the client and the docstring for the API page and MCP tools); plus
    ``request`` (Gradio's, for the caller's session)."""
    parameters = api_signature(request_cls)
    parameters.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                        annotation=gr.Request))
    signature = inspect.Signature(parameters, return_annotation=return_annotation)

    def call(*args, **kwargs):
        values = dict(signature.bind(*args, **kwargs).arguments)
        return run(values, values.pop("request", None))

    call.__name__ = call.__qualname__ = name
    call.__signature__ = signature
    call.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": return_annotation}
    call.__doc__ = api_docstring(summary, request_cls, returns)
    return call


def early_refusal(arena: Arena, run) -> str | None:
    """The request's own caps (public mode's first, as the core's gate orders them) and bounds, checked before the
    request is echoed back in a result: a value past 64 bits cannot even be written as the answer's JSON."""
    return (run.refuse_public(arena.policy.limits) if arena.policy.public else None) or run.refuse_bounds()


def make_compare_text(arena: Arena):
    """Build the /compare_text function bound to this arena."""

    def compare_text(values: dict, request: gr.Request | None) -> dict:
        try:
            run = TextRunRequest.from_values(values)
        except (ValueError, TypeError) as exc:
            return {"error": str(exc), "results": []}
        if problem := early_refusal(arena, run):  # before the request is echoed back (a seed past 64 bits cannot be)
            return {"error": problem, "results": []}
        owner = session_of(request)
        with arena.stoppable(owner) as cancel:
            result = arena.public_view(arena.run_text_to_end(run, cancel=cancel).to_dict())
        # API runs are kept too (the client's session); an MCP call has no session; a stopped run is not kept.
        if not is_mcp(request) and result.get("phase") != "stopped":
            arena.history.add(owner, "text", result)
        return result

    return request_function(TextRunRequest, "compare_text", "Run one prompt greedily through several backends and "
                            "return every answer, token ids, timings and verdicts.",
                            "the run as JSON (the dashboard's structured result).", compare_text)


def make_load_sweep(arena: Arena):
    """Build the /load_sweep function (`arena.serving`): declared fields, refused in public mode."""
    from arena import LOAD_SWEEP_SUMMARY as SUMMARY
    from arena import LoadRunRequest, load_sweep_values

    def load_sweep(values: dict, request: gr.Request | None) -> dict:
        with arena.stoppable(session_of(request)) as cancel:
            return load_sweep_values(arena, values, cancel)

    return request_function(LoadRunRequest, "load_sweep", SUMMARY, "the sweep as JSON (servers[].levels[]: "
                            "figures, busy-machine marks, verdict, answers).", load_sweep)


def make_check(arena: Arena):
    """Build the /check function: its parameters are `CheckRequest`'s declared fields, as the CLI's flags are."""

    def check(values: dict, request: gr.Request | None) -> dict:
        from arena import check as run_check

        try:
            asked = CheckRequest.from_values(values)
        except (ValueError, TypeError) as exc:
            return {"broken": True, "error": str(exc), "checks": []}
        with arena.stoppable(session_of(request)) as cancel:  # bounds and public caps: `check` refuses them first
            return arena.public_view(run_check(arena, asked, cancel=cancel))

    return request_function(CheckRequest, "check", "Is the candidate broken? Runs it next to the reference on a "
                            "few prompts and returns the verdicts.",
                            '{"broken": bool, "error": str | None, "checks": [{"prompt", "verdict": {"kind", '
                            '"reason", "broken", "metrics"}, "reference_verdict", ...}], "where", ...}.', check)


HEAVY_MODULES = ("torch", "transformers", "onnxruntime", "optimum", "tensorrt")


def make_stop(arena: Arena):
    def stop(request: gr.Request = None) -> str:
        """Stop your own run (the one started from this browser tab or API client): its worker is ended at once,
        and this answers once the run has ended (a few seconds at most). Not through MCP: MCP calls share one
        relay session, so a stop there could end another client's run."""
        if is_mcp(request):
            return ("Stop is not available through MCP: every MCP call is its own run, and MCP clients share one "
                    "relay session (use the web page or gradio_client to stop a run).")
        ended = arena.stop(session_of(request))
        if ended is None:
            return "You have no run in progress."
        if ended:
            return "Stopped your run: its worker was ended; the next run starts a fresh one."
        return "Stopping your run: its worker was ended; the run is still finishing (it was waiting for its turn)."

    return stop


def make_diagnostics(arena: Arena):
    def diagnostics() -> dict:
        """The UI process's pid, which heavy libraries it has imported (should be none) and its worker pids."""
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY_MODULES)
        return {"pid": os.getpid(), "heavy_modules": heavy, "workers": arena.worker_pids(),
                "cache_dir": str(arena.cache_dir)}

    return diagnostics


def make_compare_image(arena: Arena):
    def compare_image(values: dict, request: gr.Request | None) -> tuple[list, dict]:
        try:
            run = ImageRunRequest.from_values(values)
        except (ValueError, TypeError) as exc:
            return [], {"error": str(exc), "results": []}
        if problem := early_refusal(arena, run):
            return [], {"error": problem, "results": []}
        owner = session_of(request)
        with arena.stoppable(owner) as cancel:
            result = arena.run_image_to_end(run, cancel=cancel)
        gallery = [(r.image, r.spec.label) for r in result.results if r.image is not None]
        view = arena.public_view(result.to_dict())
        if not is_mcp(request) and view.get("phase") != "stopped":
            arena.history.add(owner, "image", view, images=[r.image for r in result.results])
        return gallery, view

    return request_function(ImageRunRequest, "compare_image", "Draw one prompt from the same seed and latents "
                            "through several backends; return the images and the run as JSON.",
                            "the images (a gallery) and the run as JSON.", compare_image, tuple)


def api_component(info: FieldInfo) -> gr.components.Component:
    """A hidden input of the /compare_image endpoint for one declared field."""
    if info.kind == "backends":
        return gr.Textbox(",".join(DEFAULT_BACKENDS), label=info.name)
    if info.kind in ("int", "size"):
        return gr.Number(info.default or 0, precision=0, label=info.name)
    if info.kind == "float":
        return gr.Number(info.default, label=info.name)
    return gr.Textbox(info.default, label=info.name)


def register_api(arena: Arena) -> None:
    """Add the API-only endpoints to the Blocks being built."""
    gr.api(make_compare_text(arena), api_name="compare_text", concurrency_limit=1,
           concurrency_id=RUN_CONCURRENCY_ID)
    # Images need real components (a gallery the client downloads), so this endpoint has hidden widgets.
    with gr.Group(visible=False):
        inputs = [api_component(info) for info in api_parameters(ImageRunRequest)]
        outputs = [gr.Gallery(label="images", format="png"), gr.JSON(label="result")]
        trigger = gr.Button("compare_image")
    trigger.click(make_compare_image(arena), inputs, outputs, api_name="compare_image", concurrency_limit=1,
                  concurrency_id=RUN_CONCURRENCY_ID)
    gr.api(make_check(arena), api_name="check", concurrency_limit=1, concurrency_id=RUN_CONCURRENCY_ID)
    gr.api(make_load_sweep(arena), api_name="load_sweep", concurrency_limit=1, concurrency_id=RUN_CONCURRENCY_ID)
    register_example_api(arena)
    # Outside the run slot: a stop must not wait behind the run it stops.
    gr.api(make_stop(arena), api_name="stop", concurrency_limit=None)
    if not arena.policy.public:  # pids and server paths are nobody's business on a public server
        gr.api(make_diagnostics(arena), api_name="diagnostics", api_visibility="undocumented")
