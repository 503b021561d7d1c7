"""Plotly figures built from a run's JSON result (the same dict the API returns)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORS = {"pytorch": "#ee4c2c", "onnxruntime": "#005ced", "tensorrt": "#76b900"}
FALLBACK_COLORS = ("#2a9d8f", "#e9c46a", "#8338ec", "#6c757d")


def _color(result: dict[str, Any], index: int) -> str:
    return COLORS.get(result["backend"], FALLBACK_COLORS[index % len(FALLBACK_COLORS)])


def text_latency_figure(run: dict[str, Any]) -> go.Figure:
    """Time to first token, total time and tokens/s per backend, and each token's latency over the answer."""
    done = [r for r in run.get("results", []) if r.get("timings")]
    fig = make_subplots(
        rows=2, cols=3, specs=[[{}, {}, {}], [{"colspan": 3}, None, None]], vertical_spacing=0.2,
        subplot_titles=("Time to first token (s)", "Total generation time (s)", "Tokens per second",
                        "Latency of each new token (ms)"))
    for index, result in enumerate(done):
        timings, color, label = result["timings"], _color(result, index), result["label"]
        for col, key in ((1, "ttft_s"), (2, "total_s"), (3, "tokens_per_s")):
            value = timings[key]
            fig.add_trace(go.Bar(x=[label], y=[value], name=label, marker_color=color, legendgroup=label,
                                 showlegend=False, text=[f"{value:.3g}"], textposition="auto",
                                 cliponaxis=False), row=1, col=col)
        stamps = timings.get("token_times_s") or []
        steps = [(b - a) * 1000 for a, b in zip([0.0, *stamps[:-1]], stamps, strict=True)]
        fig.add_trace(go.Scatter(x=list(range(1, len(steps) + 1)), y=steps, mode="lines", name=label,
                                 line={"color": color}, legendgroup=label), row=2, col=1)
    for col in (1, 2, 3):  # the legend names the backends; rotated tick labels would collide with row 2
        fig.update_xaxes(showticklabels=False, row=1, col=col)
    fig.update_xaxes(title_text="new token", row=2, col=1)
    fig.update_yaxes(type="log", row=2, col=1)
    fig.update_layout(height=560, margin={"l": 40, "r": 20, "t": 60, "b": 40}, bargap=0.35,
                      legend={"orientation": "h", "y": -0.15}, template="plotly_white")
    return fig if done else _placeholder(fig)


def image_latency_figure(run: dict[str, Any]) -> go.Figure:
    """Per-step denoising latency per backend, and the split between text encoder, UNet loop and VAE decode."""
    done = [r for r in run.get("results", []) if r.get("timings")]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.12,
                        subplot_titles=("Latency of each denoising step (ms)", "Where the time goes (s)"))
    parts = (("text_encoder_s", "text encoder", "#94a3b8"), ("unet_s", "UNet loop", "#6366f1"),
             ("vae_s", "VAE decode", "#f59e0b"))
    for index, result in enumerate(done):
        timings, label = result["timings"], result["label"]
        steps = [s * 1000 for s in timings.get("step_times_s") or []]
        fig.add_trace(go.Scatter(x=list(range(1, len(steps) + 1)), y=steps, mode="lines+markers", name=label,
                                 line={"color": _color(result, index)}), row=1, col=1)
    for key, name, color in parts:
        fig.add_trace(go.Bar(x=[r["label"] for r in done], y=[r["timings"][key] for r in done], name=name,
                             marker_color=color), row=1, col=2)
    fig.update_layout(barmode="stack", height=380, margin={"l": 40, "r": 20, "t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.2}, template="plotly_white")
    fig.update_xaxes(title_text="step", row=1, col=1)
    return fig if done else _placeholder(fig)


def _placeholder(fig: go.Figure) -> go.Figure:
    """An empty figure that says what will appear (before the first run)."""
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text="Run a comparison to see latency here", showarrow=False, x=0.5, y=0.5,
                       xref="paper", yref="paper", font={"size": 16, "color": "#888"})
    return fig
