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


BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


def bandwidth_bound(parameters: int | None, precision: str, bandwidth_gbs: float | None) -> float | None:
    """Tokens/s a decoder cannot beat on this machine: every weight is read once per token, so at most the
    measured copy bandwidth over the bytes of weights (parameters x bytes per weight of the precision)."""
    if not parameters or not bandwidth_gbs or precision not in BYTES_PER_WEIGHT:
        return None
    return bandwidth_gbs * 1e9 / (parameters * BYTES_PER_WEIGHT[precision])


def speed_quality_figure(run: dict[str, Any]) -> go.Figure:
    """Tokens/s against teacher-forced top-1 agreement with the reference: one point per backend and precision,
    the reference marked, and the memory-bandwidth bound of each precision drawn as a dashed line."""
    fig = go.Figure()
    index = run.get("reference_index")
    results = run.get("results", [])
    points = []
    for i, result in enumerate(results):
        verdict = result.get("verdict") or {}
        quality = (verdict.get("metrics") or {}).get("quality") or {}
        if not result.get("timings") or quality.get("top1") is None:
            continue
        precision = (verdict.get("metrics") or {}).get("precision") or result.get("options", {}).get("precision")
        points.append((i, result, quality, precision))
    for i, result, quality, _precision in points:
        is_ref = i == index
        fig.add_trace(go.Scatter(
            x=[quality["top1"] * 100], y=[result["timings"]["tokens_per_s"]], mode="markers+text",
            name=result["label"] + (" (reference)" if is_ref else ""), text=[verdict_kind(result)],
            textposition="top center", marker={"color": _color(result, i), "size": 16 if is_ref else 12,
                                               "symbol": "star" if is_ref else "circle",
                                               "line": {"width": 2, "color": "#111" if is_ref else "#fff"}},
            hovertemplate=(f"{result['label']}<br>top-1 %{{x:.1f}}%<br>%{{y:.1f}} tokens/s<br>KL "
                           f"{quality['kl']:.3g} nats<extra></extra>")))
    parameters = (run.get("model") or {}).get("parameters")
    bandwidth = (run.get("environment") or {}).get("copy_bandwidth_gbs")
    for precision in sorted({p for *_, p in points if p}):
        bound = bandwidth_bound(parameters, precision, bandwidth)
        if bound:
            fig.add_hline(y=bound, line_dash="dash", line_color="#888",
                          annotation_text=f"{precision} bandwidth bound {bound:.0f} tok/s "
                                          f"({bandwidth:g} GB/s / {parameters * BYTES_PER_WEIGHT[precision] / 1e6:.0f} "
                                          "MB per token)", annotation_position="top left")
    fig.update_layout(height=380, margin={"l": 40, "r": 20, "t": 50, "b": 40}, template="plotly_white",
                      title="Speed against quality (teacher-forced, vs the reference)",
                      legend={"orientation": "h", "y": -0.25})
    fig.update_xaxes(title_text="top-1 agreement with the reference (%)")
    fig.update_yaxes(title_text="tokens per second", rangemode="tozero")
    return fig if points else _empty_note(fig, "Run a comparison to see speed against quality here")


def position_kl_figure(run: dict[str, Any], sequence: str = "paragraph") -> go.Figure:
    """KL(reference || candidate) at each teacher-forced position of the fixed paragraph, one line per candidate,
    with the floor of its precision dashed and the onset (where a sequence-dependent bug starts) marked."""
    fig = go.Figure()
    drawn = 0
    for i, result in enumerate(run.get("results", [])):
        metrics = (result.get("verdict") or {}).get("metrics") or {}
        figures = ((metrics.get("quality") or {}).get("sequences") or {}).get(sequence) or {}
        kl = figures.get("kl_positions")
        if i == run.get("reference_index") or not kl:
            continue
        drawn += 1
        color = _color(result, i)
        fig.add_trace(go.Scatter(x=list(range(1, len(kl) + 1)), y=[max(v, 1e-6) for v in kl], mode="lines",
                                 name=f"{result['label']} ({verdict_kind(result)})", line={"color": color},
                                 hovertemplate="position %{x}<br>KL %{y:.3g} nats<extra></extra>"))
        onset = metrics.get("onset")
        if onset and onset.get("sequence") == sequence:
            fig.add_hline(y=onset["threshold"], line_dash="dot", line_color="#888",
                          annotation_text=f"floor {onset['threshold']:g}", annotation_position="bottom right")
            if onset["kind"] != "scattered":
                fig.add_vline(x=onset["position"] + 1, line_dash="dash", line_color=color,
                              annotation_text=f"onset: position {onset['position']}",
                              annotation_position="top left")
    fig.update_layout(height=320, margin={"l": 50, "r": 20, "t": 50, "b": 40}, template="plotly_white",
                      title="Where in the sequence: KL per teacher-forced position of the fixed paragraph",
                      legend={"orientation": "h", "y": -0.3})
    fig.update_xaxes(title_text="position (token) in the paragraph")
    fig.update_yaxes(title_text="KL vs the reference (nats, log)", type="log")
    return fig if drawn else _empty_note(fig, "Run a comparison to see where in the sequence candidates differ")


def verdict_kind(result: dict[str, Any]) -> str:
    return (result.get("verdict") or {}).get("kind", "")


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
    return _empty_note(fig, "Run a comparison to see latency here")


def _empty_note(fig: go.Figure, text: str) -> go.Figure:
    """``fig`` with a grey note in its middle saying what will appear there."""
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 16, "color": "#888"})
    return fig
