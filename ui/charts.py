"""Plotly figures built from a run's JSON result (the same dict the API returns)."""

from __future__ import annotations

import textwrap
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from arena import Quality, Where
from ui.colors import fill, is_reference, state_of

# Backends that share a state (two MATCH, the same green) are told apart by their line's dash and their name.
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def _color(run: dict[str, Any], result: dict[str, Any]) -> str:
    """The colour of ``result``'s state (`ui.colors`): the reference slate, MATCH green, DRIFT amber, broken red,
    not compared or not judged grey; the same in every chart and on the badges."""
    results = run.get("results") or []
    index = next((i for i, r in enumerate(results) if r is result), None)
    return fill(state_of(result, is_reference(result, run, index)))


def _dash(run: dict[str, Any], result: dict[str, Any]) -> str:
    index = next((i for i, r in enumerate(run.get("results") or []) if r is result), 0)
    return "dot" if is_broken(result) else DASHES[index % len(DASHES)]


def _legend_name(run: dict[str, Any], result: dict[str, Any]) -> str:
    """"ONNX Runtime · cpu · int8 (GIBBERISH)", "PyTorch · cpu · fp32 (reference)": the colour's meaning in words."""
    if _color(run, result) == fill("reference"):
        return f"{result['label']} (reference)"
    kind = verdict_kind(result) or ("ERROR" if result.get("error") else "")
    return result["label"] + (f" ({kind})" if kind else "")


def tick_label(label: str) -> str:
    """A backend's label on a chart axis in two lines ("ONNX Runtime<br>auto · fp32"): narrow enough for a phone."""
    return label.replace(" · ", "<br>", 1)


def is_broken(result: dict[str, Any]) -> bool:
    """A result whose verdict says broken (or that failed): its bars are drawn hatched and labelled."""
    return bool(result.get("error") or (result.get("verdict") or {}).get("broken"))


def stacked_rows(bar_rows: int, bars: int, line_px: int = 240) -> tuple[list[float], float, int]:
    """(row heights, vertical spacing, figure height) of charts stacked one under the other, each titled: every bar
    chart as tall as its bars need (one per backend), the line chart under them ``line_px`` tall. Stacked, each
    chart gets the screen's whole width: side by side at 390 px, their titles overprinted each other."""
    bar_px, gap_px, margins = 36 + 34 * max(bars, 1), 64, 60 + 110
    plots = bar_rows * bar_px + line_px
    height = plots + bar_rows * gap_px + margins
    area = height - margins
    return [bar_px / plots] * bar_rows + [line_px / plots], gap_px / area, height


def text_latency_figure(run: dict[str, Any]) -> go.Figure:
    """Time to first token (ms, as in the panels), total time and tokens/s per backend, each a bar chart with the
    backends named on its axis (a broken backend's bar hatched, with its verdict: fast and wrong reads as wrong),
    and each token's latency over the answer; stacked, so each reads whole on a phone."""
    done = [r for r in run.get("results", []) if r.get("timings")]
    heights, spacing, height = stacked_rows(3, len(done))
    fig = make_subplots(rows=4, cols=1, row_heights=heights, vertical_spacing=spacing,
                        subplot_titles=("Time to first token (ms)", "Total generation time (s)", "Tokens per second",
                                        "Latency of each new token (ms)"))
    for result in done:
        timings, color, label = result["timings"], _color(run, result), result["label"]
        broken = is_broken(result)
        for row, key, scale, shown in ((1, "ttft_s", 1000, "{:,.0f} ms"), (2, "total_s", 1, "{:.2f} s"),
                                       (3, "tokens_per_s", 1, "{:.1f}")):
            value = timings[key] * scale
            text = shown.format(value) + (f" {verdict_kind(result) or 'ERROR'}" if broken else "")
            fig.add_trace(go.Bar(y=[tick_label(label)], x=[value], orientation="h", name=label, legendgroup=label,
                                 showlegend=False,
                                 marker={"color": color, "pattern": {"shape": "/" if broken else "",
                                                                     "fgcolor": "#fecaca", "fgopacity": 0.45,
                                                                     "solidity": 0.15}},
                                 text=[text], textposition="auto", insidetextanchor="end", cliponaxis=False,
                                 insidetextfont={"color": "#fff"}, outsidetextfont={"color": "#111827"},
                                 hovertemplate=f"{label}<br>%{{x{shown[1:]}<extra></extra>"), row=row, col=1)
        stamps = timings.get("token_times_s") or []
        steps = [(b - a) * 1000 for a, b in zip([0.0, *stamps[:-1]], stamps, strict=True)]
        fig.add_trace(go.Scatter(x=list(range(1, len(steps) + 1)), y=steps, mode="lines",
                                 name=_legend_name(run, result), line={"color": color, "dash": _dash(run, result)},
                                 legendgroup=label),
                      row=4, col=1)
    for row in (1, 2, 3):
        fig.update_xaxes(rangemode="tozero", row=row, col=1)
        fig.update_yaxes(autorange="reversed", automargin=True, row=row, col=1)  # the run's order, top down
    fig.update_xaxes(title_text="new token (the 1st includes the prefill)", row=4, col=1)
    fig.update_yaxes(title_text="ms", rangemode="tozero", row=4, col=1)
    fig.update_annotations(xanchor="left", x=0, font={"size": 13})  # the subplot titles, over each chart's left
    fig.update_layout(height=height, margin={"l": 10, "r": 20, "t": 60, "b": 110}, bargap=0.3,
                      legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0},
                      template="plotly_white")
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
        quality = Quality.from_dict((verdict.get("metrics") or {}).get("quality"))
        if not result.get("timings") or quality.top1 is None:
            continue
        precision = (verdict.get("metrics") or {}).get("precision") or result.get("options", {}).get("precision")
        points.append((i, result, quality, precision))
    lowest = min((q.top1 * 100 for _i, _r, q, _p in points), default=100.0)
    left = max(0.0, min(lowest, 90.0) - 5)
    for n, (i, result, quality, _precision) in enumerate(points):
        is_ref = i == index
        symbol = "star" if is_ref else "x" if is_broken(result) else "circle"
        x = quality.top1 * 100
        # The verdict's word beside its point, on the side with room: right of a point near the left edge, left of
        # one near 100% (centred there, "GIBBERISH" and "MATCH" were cut at the axes' ends).
        side = "right" if x < left + (102 - left) * 0.3 else "left" if x > left + (102 - left) * 0.7 else "center"
        fig.add_trace(go.Scatter(
            x=[x], y=[result["timings"]["tokens_per_s"]], mode="markers+text", cliponaxis=False,
            name=result["label"] + (" (reference)" if is_ref else f" ({verdict_kind(result)})"),
            text=["reference" if is_ref else verdict_kind(result)],
            textposition=f"{('top', 'bottom')[n % 2]} {side}",
            marker={"color": _color(run, result), "size": 16 if is_ref else 13, "symbol": symbol,
                    "line": {"width": 2, "color": "#111" if is_ref else "#fff"}},
            hovertemplate=(f"{result['label']}<br>top-1 %{{x:.1f}}%<br>%{{y:.1f}} tokens/s<br>KL "
                           f"{quality.kl:.3g} nats<extra></extra>")))
    parameters = (run.get("model") or {}).get("parameters")
    bandwidth = (run.get("environment") or {}).get("copy_bandwidth_gbs")
    for precision in sorted({p for *_, p in points if p}):
        bound = bandwidth_bound(parameters, precision, bandwidth)
        if bound:
            fig.add_hline(y=bound, line_dash="dash", line_color="#888",
                          annotation_text=f"{precision} bound {bound:.0f} tok/s", annotation_position="top left",
                          annotation_hovertext=f"{precision}: memory-bandwidth bound {bound:.0f} tokens/s "
                                               f"({bandwidth:g} GB/s / "
                                               f"{parameters * BYTES_PER_WEIGHT[precision] / 1e6:.0f} MB per token)")
    fig.update_layout(height=420, margin={"l": 60, "r": 20, "t": 50, "b": 110}, template="plotly_white",
                      title={"text": "Speed vs quality (teacher-forced)", "font": {"size": 14}},
                      legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0})
    # A fixed scale up to 100%: points at 100% do not spread over "99-101%", and a drop reads as one.
    fig.update_xaxes(title_text="top-1 agreement with the reference (%)", range=[left, 102])
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
            _quality(result).sequences or {}) if name not in ("output", "paragraph")), "paragraph")
    for i, result in enumerate(run.get("results", [])):
        metrics = (result.get("verdict") or {}).get("metrics") or {}
        figures = _quality(result).sequence(sequence)
        kl = figures.kl_positions
        if i == run.get("reference_index") or not kl:
            continue
        drawn += 1
        color = _color(run, result)
        fig.add_trace(go.Scatter(x=list(range(1, len(kl) + 1)), y=[max(v, 1e-6) for v in kl], mode="lines",
                                 name=f"{result['label']} ({verdict_kind(result)})",
                                 line={"color": color, "dash": _dash(run, result)},
                                 hovertemplate="position %{x}<br>KL %{y:.3g} nats<extra></extra>"))
        cached = figures.cached or {}
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
    fig.update_layout(height=380, margin={"l": 60, "r": 20, "t": 50, "b": 110}, template="plotly_white",
                      title={"text": "KL per position of the "
                                     + ("fixed paragraph" if sequence == "paragraph" else sequence),
                             "font": {"size": 14}},
                      legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0})
    fig.update_xaxes(title_text="position (token) in the " + sequence)
    fig.update_yaxes(title_text="KL vs the reference (nats, log)", type="log", dtick=1, exponentformat="power")
    return fig if drawn else _empty_note(fig, "Run a comparison to see where in the sequence candidates differ")


def where_figure(run: dict[str, Any]) -> go.Figure:
    """Where did it break: each localized backend's relative error per unit (embeddings, each layer, final norm,
    head) on a log axis, its tolerance dashed and its first divergent unit marked."""
    fig = go.Figure()
    drawn = 0
    images = False
    for result in run.get("results", []):
        where = _where(result)
        images = images or (where is not None and where.is_image)
        if where is None or not where.per_unit:
            continue
        drawn += 1
        color = _color(run, result)
        units = [p["unit"] for p in where.per_unit]
        errors = [1e6 if p["error"] is None else max(min(p["error"], 1e6), 1e-9) for p in where.per_unit]
        fig.add_trace(go.Scatter(x=units, y=errors, mode="lines+markers",
                                 line={"color": color, "dash": _dash(run, result)},
                                 name=f"{result['label']} ({verdict_kind(result)})",
                                 hovertemplate="%{x}<br>relative error %{y:.3g}<extra></extra>"))
        fig.add_hline(y=where.threshold, line_dash="dot", line_color=color,
                      annotation_text=f"tolerance {where.threshold:g}", annotation_position="bottom right")
        if where.unit in units:  # (not "the KV cache": no unit of a full pass breaks there)
            at = units.index(where.unit)
            fig.add_trace(go.Scatter(x=[where.unit], y=[errors[at]], mode="markers+text", cliponaxis=False,
                                     marker={"symbol": "x", "size": 16, "color": fill("error")}, showlegend=False,
                                     text=[f"breaks here: {where.unit}"],
                                     textposition="bottom right" if at < len(units) / 2 else "bottom left"))
    what = "component, on the reference's inputs" if images else "unit, in forward order (prefill)"
    # The rotated unit names push the bottom margin (automargin); the legend sits under them at the figure's
    # bottom edge, never on them.
    fig.update_layout(height=460, margin={"l": 60, "r": 20, "t": 50, "b": 70}, template="plotly_white",
                      title={"text": "Where did it break", "font": {"size": 14}},
                      legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0})
    fig.update_xaxes(title_text=what, tickangle=-45, automargin=True)
    fig.update_yaxes(title_text="relative error (log)", type="log", dtick=1, exponentformat="power")
    return fig if drawn else _empty_note(fig, "A broken or drifting backend is localized here, layer by layer")


def _where(result: dict[str, Any]) -> Where | None:
    """A result's localization (`arena.Where`), or None when it has none."""
    where = ((result.get("verdict") or {}).get("metrics") or {}).get("where")
    return Where.from_dict(where) if where else None


def _quality(result: dict[str, Any]) -> Quality:
    """A result's teacher-forced figures (`arena.Quality`; not measured when it has none)."""
    return Quality.from_dict(((result.get("verdict") or {}).get("metrics") or {}).get("quality"))


def verdict_kind(result: dict[str, Any]) -> str:
    return (result.get("verdict") or {}).get("kind", "")


# The parts of an image run's time: hues no state uses (ui.colors), so no part reads as a verdict.
IMAGE_PARTS = (("text_encoder_s", "text encoder", "#67e8f9"), ("unet_s", "UNet loop", "#0e7490"),
               ("vae_s", "VAE decode", "#a78bfa"))


def image_latency_figure(run: dict[str, Any]) -> go.Figure:
    """Per-step denoising latency per backend (coloured by its state), and under it the split between text encoder,
    UNet loop and VAE decode, one bar per backend named on its axis."""
    done = [r for r in run.get("results", []) if r.get("timings")]
    bars_px = 36 + 34 * max(len(done), 1)
    height = 260 + 110 + bars_px + 60 + 110  # the gap holds the step axis's title and the bars' title
    fig = make_subplots(rows=2, cols=1, row_heights=[260 / (260 + bars_px), bars_px / (260 + bars_px)],
                        vertical_spacing=110 / (height - 170),
                        subplot_titles=("Latency of each denoising step (ms)", "Where the time goes (s)"))
    for result in done:
        timings = result["timings"]
        steps = [s * 1000 for s in timings.get("step_times_s") or []]
        fig.add_trace(go.Scatter(x=list(range(1, len(steps) + 1)), y=steps, mode="lines+markers",
                                 name=_legend_name(run, result),
                                 line={"color": _color(run, result), "dash": _dash(run, result)}), row=1, col=1)
    for key, name, color in IMAGE_PARTS:
        fig.add_trace(go.Bar(y=[tick_label(r["label"]) for r in done], x=[r["timings"][key] for r in done],
                             orientation="h", name=name, marker_color=color,
                             hovertemplate=f"%{{y}}<br>{name} %{{x:.3f}} s<extra></extra>"), row=2, col=1)
    fig.update_layout(barmode="stack", height=height, margin={"l": 10, "r": 20, "t": 60, "b": 110},
                      legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0},
                      template="plotly_white")
    fig.update_annotations(xanchor="left", x=0, font={"size": 13})
    fig.update_xaxes(title_text="denoising step", row=1, col=1)
    fig.update_yaxes(title_text="ms", rangemode="tozero", automargin=True, row=1, col=1)
    fig.update_xaxes(rangemode="tozero", row=2, col=1)
    fig.update_yaxes(autorange="reversed", automargin=True, row=2, col=1)
    # A backend that failed (an fp16 VAE's NaN) has no timings: say so on the chart rather than leave it out.
    failed = [r for r in run.get("results", []) if not r.get("timings")]
    if done and failed:
        named = "; ".join(f"{r['label']} ({(r.get('verdict') or {}).get('kind') or 'failed'})" for r in failed)
        # Above the plotting area ("container" is a legend's reference, not an annotation's)
        fig.add_annotation(text=f"Not timed, the run failed: {named}", showarrow=False, x=0, y=1.0, yanchor="bottom",
                           xref="paper", yref="paper", yshift=40, xanchor="left",
                           font={"size": 12, "color": fill("error")})
        fig.update_layout(margin={"t": 90})
    return fig if done else _placeholder(fig)


def _placeholder(fig: go.Figure) -> go.Figure:
    """An empty figure, a third of the chart's height, that says what will appear (before the first run)."""
    fig = go.Figure(layout={"template": "plotly_white", "height": 260, "margin": {"l": 10, "r": 10, "t": 20, "b": 20}})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _empty_note(fig, "Run a comparison to see latency here")


def _empty_note(fig: go.Figure, text: str) -> go.Figure:
    """``fig`` with a grey note in its middle saying what will appear there: a few words a line on a white ground,
    so it fits a phone's narrow plot and reads over the empty axes (one 60-character line ran past both edges at
    390 px, over the tick labels)."""
    fig.add_annotation(text="<br>".join(textwrap.wrap(text, 28)), showarrow=False, x=0.5, y=0.5, xref="paper",
                       yref="paper", font={"size": 15, "color": "#777"}, bgcolor="rgba(255,255,255,0.9)")
    return fig
