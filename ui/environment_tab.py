"""The Environment tab: what this machine has, and for everything missing, why and how to install it."""

from __future__ import annotations

from typing import Any

import gradio as gr

from arena.core import Arena
from arena.environment import provider_summary


def environment_markdown(env: dict[str, Any], backend_options: dict[str, dict[str, Any]]) -> str:
    """Facts of the machine and every backend option's availability, as Markdown."""
    if env.get("probe_error"):
        return f"**The environment probe failed:** {env['probe_error']}"
    torch, ort, trt = env.get("torch", {}), env.get("onnxruntime", {}), env.get("tensorrt", {})
    gpus = ", ".join(f"{d['name']} (sm {d['capability']}, {d['memory_gb']} GB)" for d in torch.get("devices", []))
    lines = [
        "### Machine",
        f"- Python {env.get('python')} on {env.get('platform')}",
        f"- {env.get('cpu_count')} CPU cores, {env.get('memory_gb')} GB RAM",
        f"- GPUs seen by PyTorch: {gpus or 'none'}",
        f"- torch {torch.get('version', 'not installed')} (CUDA build: {torch.get('cuda_build') or 'no'})",
        f"- onnxruntime {ort.get('version', 'not installed')}, providers: {provider_summary(ort)}",
        "- TensorRT: " + (trt.get("version") or "not installed"),
        "",
        "### Backends and options",
        "| Backend | Option | Value | Status |",
        "|---|---|---|---|",
    ]
    for info in backend_options.values():
        whole = info["availability"]
        if not whole.ok:
            lines.append(f"| {info['title']} | – | – | unavailable: {whole.sentence()} |")
            continue
        for option, choices in info["options"].items():
            for choice in choices:
                status = "available" if choice.availability.ok else f"unavailable: {choice.availability.sentence()}"
                lines.append(f"| {info['title']} | {option} | {choice.label} | {status} |")
    versions = env.get("versions", {})
    lines += ["", "### Package versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)]
    return "\n".join(lines)


def build_environment_tab(arena: Arena) -> gr.Markdown:
    return gr.Markdown(environment_markdown(arena.environment(), arena.backend_options()),
                       elem_id="environment")
