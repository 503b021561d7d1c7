"""Plotly figures built from a run's JSON result (the same dict the API returns)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from arena.registry import backend_class

FALLBACK_COLORS = ("#2a9d8f", "#e9c46a", "#8338ec", "#6c757d")


def _color(result: dict[str, Any], index: int) -> str:
    """The backend's own colour (`Backend.color`), else a fallback by position (a backend without one, or a stored
    run's backend this process does not know)."""
    try:
        color = backend_class(result["backend"]).color
    except (KeyError, ValueError, ImportError, AttributeError):
        color = ""
    return color or FALLBACK_COLORS[index % len(FALLBACK_COLORS)]


def is_broken(result: dict[str, Any]) -> bool:
    """A result whose verdict says broken (or that failed): its bars are drawn hatched and labelled."""
    return bool(result.get("error") or (result.get("verdict") or {}).get("broken"))


def text_latency_figure(run: dict[str, Any]) -> go.Figure:
    """Time to first token, total time and tokens/s per backend (a broken backend's bars hatched, with its
    verdict: fast and wrong reads as wrong), and each token's latency over the answer."""
    done = [r for r in run.get("results", []) if r.get("timings")]
    fig = make_subplots(
        rows=2, cols=3, specs=[[{}, {}, {}], [{"colspan": 3}, None, None]], vertical_spacing=0.22,
        subplot_titles=("Time to first token", "Total generation time", "Tokens per second",
                        "Latency of each new token"))
    for index, result in enumerate(done):
        timings, color, label = result["timings"], _color(result, index), result["label"]
        broken = is_broken(result)
        for col, key in ((1, "ttft_s"), (2, "total_s"), (3, "tokens_per_s")):
            value = timings[key]
            text = f"{value:.3g}" + (f"<br>{verdict_kind(result) or 'ERROR'}" if broken else "")
            fig.add_trace(go.Bar(x=[label], y=[value], name=label, legendgroup=label, showlegend=False,
                                 marker={"color": color, "opacity": 0.45 if broken else 1.0,
                                         "pattern": {"shape": "/" if broken else "", "fgcolor": "#111"}},
                                 text=[text], textposition="auto", cliponaxis=False), row=1, col=col)
        stamps = timings.get("token_times_s") or []
        steps = [(b - a) * 1000 for a, b in zip([0.0, *stamps[:-1]], stamps, strict=True)]
        fig.add_trace(go.Scatter(x=list(range(1, len(steps) + 1)), y=steps, mode="lines",
                                 name=label + (f" ({verdict_kind(result)})" if broken else ""),
                                 line={"color": color, "dash": "dot" if broken else "solid"}, legendgroup=label),
                      row=2, col=1)
    for col, unit in ((1, "seconds"), (2, "seconds"), (3, "tokens per second")):
        # The legend names the backends; rotated tick labels would collide with row 2.
        fig.update_xaxes(showticklabels=False, row=1, col=col)
        fig.update_yaxes(title_text=unit, rangemode="tozero", row=1, col=col)
    fig.update_xaxes(title_text="new token (1 = the first, which includes the prompt's prefill)", row=2, col=1)
    fig.update_yaxes(title_text="milliseconds", rangemode="tozero", row=2, col=1)
    fig.update_layout(height=600, margin={"l": 60, "r": 20, "t": 60, "b": 90}, bargap=0.35,
                      legend={"orientation": "h", "y": -0.18, "x": 0}, template="plotly_white")
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
    for n, (i, result, quality, _precision) in enumerate(points):
        is_ref = i == index
        symbol = "star" if is_ref else "x" if is_broken(result) else "circle"
        fig.add_trace(go.Scatter(
            x=[quality["top1"] * 100], y=[result["timings"]["tokens_per_s"]], mode="markers+text",
            name=result["label"] + (" (reference)" if is_ref else f" ({verdict_kind(result)})"),
            text=[verdict_kind(result)], textposition=("top center", "bottom center")[n % 2],
            marker={"color": _color(result, i), "size": 16 if is_ref else 13, "symbol": symbol,
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
    fig.update_layout(height=400, margin={"l": 60, "r": 20, "t": 50, "b": 90}, template="plotly_white",
                      title={"text": "Speed against quality (teacher-forced, vs the reference)", "font": {"size": 14}},
                      legend={"orientation": "h", "y": -0.3, "x": 0})
    lowest = min((q["top1"] * 100 for _i, _r, q, _p in points), default=100.0)
    # A fixed scale up to 100%: points at 100% do not spread over "99-101%", and a drop reads as one.
    fig.update_xaxes(title_text="top-1 agreement with the reference (%)", range=[max(0.0, min(lowest, 90.0) - 5), 102])
    fig.update_yaxes(title_text="tokens per second", rangemode="tozero")
    return fig if points else _empty_note(fig, "Run a comparison to see speed against quality here")


def position_kl_figure(run: dict[str, Any], sequence: str | None = None) -> go.Figure:
    """KL(reference || candidate) at each teacher-forced position of the fixed paragraph (or of the long reach's
    text, when the run has one), one line per candidate, with the floor of its precision dashed, the onset (where a
    sequence-dependent bug starts) marked, and the long reach's last positions through each candidate's KV cache
    as dots."""
    fig = go.Figure()
    drawn = 0
    if sequence is None:
        sequence = next((name for result in run.get("results", []) for name in (
            ((result.get("verdict") or {}).get("metrics") or {}).get("quality") or {}).get("sequences") or {}
            if name not in ("output", "paragraph")), "paragraph")
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
        cached = figures.get("cached") or {}
        if cached.get("kl_steps"):
            first = int(cached.get("from_position", 0))
            fig.add_trace(go.Scatter(
                x=[first + k + 1 for k in range(len(cached["kl_steps"]))],
                y=[max(v, 1e-6) for v in cached["kl_steps"]], mode="markers", marker={"color": color, "size": 5},
                name=f"{result['label']}: through its KV cache",
                hovertemplate="position %{x} (cached step)<br>KL %{y:.3g} nats<extra></extra>"))
        onset = metrics.get("onset")
        if onset and onset.get("sequence") == sequence:
            fig.add_hline(y=onset["threshold"], line_dash="dot", line_color="#888",
                          annotation_text=f"floor {onset['threshold']:g}", annotation_position="bottom right")
            if onset["kind"] != "scattered":
                fig.add_vline(x=onset["position"] + 1, line_dash="dash", line_color=color,
                              annotation_text=f"onset: position {onset['position']}",
                              annotation_position="top left")
    fig.update_layout(height=340, margin={"l": 60, "r": 20, "t": 50, "b": 90}, template="plotly_white",
                      title={"text": "Where in the sequence: KL per position of the "
                                     + ("fixed paragraph" if sequence == "paragraph" else sequence),
                             "font": {"size": 14}},
                      legend={"orientation": "h", "y": -0.35, "x": 0})
    fig.update_xaxes(title_text="position (token) in the " + sequence)
    fig.update_yaxes(title_text="KL vs the reference (nats, log)", type="log", dtick=1, exponentformat="power")
    return fig if drawn else _empty_note(fig, "Run a comparison to see where in the sequence candidates differ")


def where_figure(run: dict[str, Any]) -> go.Figure:
    """Where did it break: each localized backend's relative error per unit (embeddings, each layer, final norm,
    head) on a log axis, its tolerance dashed and its first divergent unit marked."""
    fig = go.Figure()
    drawn = 0
    for i, result in enumerate(run.get("results", [])):
        where = ((result.get("verdict") or {}).get("metrics") or {}).get("where")
        if not where or not where.get("per_unit"):
            continue
        drawn += 1
        color = _color(result, i)
        units = [p["unit"] for p in where["per_unit"]]
        errors = [1e6 if p["error"] is None else max(min(p["error"], 1e6), 1e-9) for p in where["per_unit"]]
        fig.add_trace(go.Scatter(x=units, y=errors, mode="lines+markers", line={"color": color},
                                 name=f"{result['label']} ({verdict_kind(result)})",
                                 hovertemplate="%{x}<br>relative error %{y:.3g}<extra></extra>"))
        fig.add_hline(y=where["threshold"], line_dash="dot", line_color=color,
                      annotation_text=f"tolerance {where['threshold']:g}", annotation_position="bottom right")
        if where["unit"] in units:  # (not "the KV cache": no unit of a full pass breaks there)
            fig.add_trace(go.Scatter(x=[where["unit"]], y=[errors[units.index(where["unit"])]], mode="markers+text",
                                     marker={"symbol": "x", "size": 16, "color": "#dc2626"}, showlegend=False,
                                     text=[f"breaks here: {where['unit']}"], textposition="bottom left"))
    images = any((((r.get("verdict") or {}).get("metrics") or {}).get("where") or {}).get("task") == "image"
                 for r in run.get("results", []))
    what = "each component's output on the reference's inputs" if images else \
        "each unit's output against the reference's (prefill)"
    fig.update_layout(height=360, margin={"l": 60, "r": 20, "t": 50, "b": 110}, template="plotly_white",
                      title={"text": f"Where did it break: {what}", "font": {"size": 14}},
                      legend={"orientation": "h", "y": -0.45, "x": 0})
    fig.update_xaxes(title_text="unit, in forward order", tickangle=-45)
    fig.update_yaxes(title_text="relative error (log)", type="log", exponentformat="power")
    return fig if drawn else _empty_note(fig, "A broken or drifting backend is localized here, layer by layer")


def verdict_kind(result: dict[str, Any]) -> str:
    return (result.get("verdict") or {}).get("kind", "")


def image_latency_figure(run: dict[str, Any]) -> go.Figure:
    """Per-step denoising latency per backend, and the split between text encoder, UNet loop and VAE decode."""
    done = [r for r in run.get("results", []) if r.get("timings")]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.12,
                        subplot_titles=("Latency of each denoising step", "Where the time goes"))
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
    fig.update_layout(barmode="stack", height=400, margin={"l": 60, "r": 20, "t": 60, "b": 90},
                      legend={"orientation": "h", "y": -0.25, "x": 0}, template="plotly_white")
    fig.update_xaxes(title_text="denoising step", row=1, col=1)
    fig.update_yaxes(title_text="milliseconds", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="seconds", row=1, col=2)
    # A backend that failed (an fp16 VAE's NaN) has no timings: say so on the chart rather than leave it out.
    failed = [r for r in run.get("results", []) if not r.get("timings")]
    if done and failed:
        named = "; ".join(f"{r['label']} ({(r.get('verdict') or {}).get('kind') or 'failed'})" for r in failed)
        fig.add_annotation(text=f"Not timed, the run failed: {named}", showarrow=False, x=0, y=1.2,
                           xref="paper", yref="paper", xanchor="left", font={"size": 12, "color": "#dc2626"})
        fig.update_layout(margin={"t": 90})
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
