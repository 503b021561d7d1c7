"""Endpoints for gradio_client: the same core as the UI, returning the structured result as JSON."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import gradio as gr

from arena.preparing.catalog import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL, IMAGE_CATALOG
from arena.core import Arena
from arena.types import BackendSpec, ImageRunRequest, TextRunRequest
from ui.controls import RUN_CONCURRENCY_ID, is_mcp, session_of
from ui.demos import register_example_api
from ui.image_tab import image_run_dict


def make_compare_text(arena: Arena):
    """Build the /compare_text function bound to this arena."""

    def compare_text(
        prompt: str,
        model: str = DEFAULT_TEXT_MODEL,
        backends: list[Any] | None = None,
        max_new_tokens: int = 64,
        prompt_format: str = "auto",
        ignore_eos: bool = False,
        warmup: int = 1,
        repeats: int = 1,
        reference: str = "auto",
        request: gr.Request = None,
    ) -> dict:
        """Run one prompt greedily through several backends and return every answer, token ids and timings.

        Args:
            prompt: the user's prompt (rendered with the model's prompt format).
            model: a catalog key, a Hugging Face hub id, or a local directory.
            backends: names ("pytorch", "onnxruntime") or dicts of options, e.g.
                {"backend": "onnxruntime", "provider": "CPUExecutionProvider", "precision": "int8",
                 "onnx_dir": "/path/to/export"}. Default: PyTorch and ONNX Runtime.
            max_new_tokens: how many tokens each backend may generate.
            prompt_format: "auto", "chat", "plain", "llama-2-chat" or "dolly".
            ignore_eos: generate exactly max_new_tokens (benchmarking).
            warmup: untimed warm-up generations per backend.
            repeats: timed generations per backend; medians are reported.
            reference: the backend the verdicts compare with: "auto" (PyTorch fp32), a name or an index.
        """
        try:
            specs = tuple(BackendSpec.from_any(b) for b in (backends or ["pytorch", "onnxruntime"]))
            run = TextRunRequest(model=model or DEFAULT_TEXT_MODEL, prompt=prompt, backends=specs,
                                 max_new_tokens=int(max_new_tokens), prompt_format=prompt_format,
                                 ignore_eos=bool(ignore_eos), warmup=int(warmup), repeats=int(repeats),
                                 reference=str(reference or "auto"))
        except (ValueError, TypeError) as exc:
            return {"error": str(exc), "results": []}
        owner = session_of(request)
        with arena.stoppable(owner) as cancel:
            result = arena.public_view(arena.run_text_to_end(run, cancel=cancel).to_dict())
        if not is_mcp(request):  # API runs are kept too (the client's session); an MCP call has no session
            arena.sharing.history.add(owner, "text", result)
        return result

    return compare_text


def make_check(arena: Arena):
    def check(model: str, candidate: Any, task: str = "auto", prompts: list[str] | None = None,
              reference: Any = "pytorch", max_new_tokens: int = 48, request: gr.Request = None) -> dict:
        """Is the candidate broken? Runs it next to the reference on a few prompts and returns the verdicts.

        Args:
            model: the reference model: a catalog key, hub id or local directory.
            candidate: a backend name or options dict, e.g. {"backend": "onnxruntime", "onnx_dir": "/exports/x"}.
            task: "auto", "text" or "image".
            prompts: the prompts to check with; default: three built-in ones.
            reference: the reference backend (default PyTorch fp32).
            max_new_tokens: tokens per text answer.
        Returns {"broken": bool, "error": str | None, "checks": [{"prompt", "verdict": {"kind", "reason",
        "broken", "metrics"}, "reference_verdict", ...}], ...}.
        """
        from arena.judging.check import check as run_check

        try:
            spec, ref = BackendSpec.from_any(candidate), BackendSpec.from_any(reference or "pytorch")
        except (ValueError, TypeError) as exc:
            return {"broken": True, "error": str(exc), "checks": []}
        with arena.stoppable(session_of(request)) as cancel:
            return arena.public_view(run_check(arena, model, spec, task=task or "auto", prompts=tuple(prompts or ()),
                                               reference=ref, max_new_tokens=int(max_new_tokens), cancel=cancel))

    return check


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


def parse_backends(text: str) -> tuple[BackendSpec, ...]:
    """Backends as a JSON list (names or option dicts) or comma-separated names; empty: PyTorch and ONNX Runtime."""
    text = (text or "").strip()
    items: list[Any] = json.loads(text) if text.startswith("[") else [t for t in text.split(",") if t.strip()]
    return tuple(BackendSpec.from_any(b) for b in (items or ["pytorch", "onnxruntime"]))


def make_compare_image(arena: Arena):
    def compare_image(prompt, model, backends, negative_prompt, steps, guidance_scale, seed, height, width,
                      reference="auto", request: gr.Request = None):
        """Draw one prompt from the same seed through several backends; return the images and the result."""
        try:
            run = ImageRunRequest(model=model or DEFAULT_IMAGE_MODEL, prompt=prompt or "",
                                  backends=parse_backends(backends), negative_prompt=negative_prompt or "",
                                  steps=int(steps), guidance_scale=float(guidance_scale), seed=int(seed),
                                  height=int(height or 0) or None, width=int(width or 0) or None,
                                  reference=str(reference or "auto"))
        except (ValueError, TypeError) as exc:
            return [], {"error": str(exc), "results": []}
        owner = session_of(request)
        with arena.stoppable(owner) as cancel:
            result = arena.run_image_to_end(run, cancel=cancel)
        gallery = [(r.image, r.spec.label) for r in result.results if r.image is not None]
        view = arena.public_view(image_run_dict(result))
        if not is_mcp(request):
            arena.sharing.history.add(owner, "image", view)
        return gallery, view

    return compare_image


def register_api(arena: Arena) -> None:
    """Add the API-only endpoints to the Blocks being built."""
    gr.api(make_compare_text(arena), api_name="compare_text", concurrency_limit=1,
           concurrency_id=RUN_CONCURRENCY_ID)
    # Images need real components (a gallery the client downloads), so this endpoint has hidden widgets.
    with gr.Group(visible=False):
        entry = IMAGE_CATALOG[0]
        inputs = [gr.Textbox(label="prompt"), gr.Textbox(DEFAULT_IMAGE_MODEL, label="model"),
                  gr.Textbox("pytorch,onnxruntime", label="backends"), gr.Textbox("", label="negative_prompt"),
                  gr.Number(entry.steps, precision=0, label="steps"),
                  gr.Number(entry.guidance_scale, label="guidance_scale"), gr.Number(0, precision=0, label="seed"),
                  gr.Number(0, precision=0, label="height"), gr.Number(0, precision=0, label="width"),
                  gr.Textbox("auto", label="reference")]
        outputs = [gr.Gallery(label="images", format="png"), gr.JSON(label="result")]
        trigger = gr.Button("compare_image")
    trigger.click(make_compare_image(arena), inputs, outputs, api_name="compare_image", concurrency_limit=1,
                  concurrency_id=RUN_CONCURRENCY_ID)
    gr.api(make_check(arena), api_name="check", concurrency_limit=1, concurrency_id=RUN_CONCURRENCY_ID)
    register_example_api(arena)
    # Outside the run slot: a stop must not wait behind the run it stops.
    gr.api(make_stop(arena), api_name="stop", concurrency_limit=None)
    if not arena.public.policy.public:  # pids and server paths are nobody's business on a public server
        gr.api(make_diagnostics(arena), api_name="diagnostics", api_visibility="undocumented")
