"""Pure UI renderers: the chart and the panel text built from a result dict."""

import re
from pathlib import Path

from tests.support import ROOT
from ui.charts import text_latency_figure, tick_label
from ui.colors import STATES, contrast, fill
from ui.format import panel_header, panel_metrics, ratio_text, run_summary, summary_rows, summary_table


def result(backend, label, ids, **extra):
    timings = {"ttft_s": 0.25, "total_s": 2.0, "tokens_per_s": 16.0, "decode_tokens_per_s": 17.0,
               "token_times_s": [0.25, 0.3, 0.36]}
    load = {"export_s": 0.0, "export_cached": True, "load_s": 1.5, "provider": "CPUExecutionProvider",
            "memory_mb": 1000.0, "notes": []}
    return {"backend": backend, "label": label, "token_ids": ids, "num_new_tokens": len(ids), "text": "hi",
            "timings": timings, "load": load, "error": None, "log_tail": "", **extra}


def test_chart_has_bars_and_a_token_line_per_backend():
    run = {"results": [result("pytorch", "PyTorch", [1, 2, 3]), result("onnxruntime", "ORT", [1, 2, 3]),
                       result("onnxruntime", "broken", [], timings=None, error="boom")]}
    figure = text_latency_figure(run)
    bars = [t for t in figure.data if t.type == "bar"]
    lines = [t for t in figure.data if t.type == "scatter"]
    assert len(bars) == 6 and len(lines) == 2
    assert [round(v, 1) for v in lines[0].y] == [250.0, 50.0, 60.0]  # per-token latency in ms
    assert len(text_latency_figure({}).data) == 0


def test_charts_draw_a_broken_backend_as_broken_and_label_their_axes():
    gibberish = {"kind": "GIBBERISH", "reason": "x", "broken": True, "metrics": {}}
    run = {"results": [result("pytorch", "PyTorch", [1, 2, 3]),
                       result("onnxruntime", "ORT", [4, 5, 6], verdict=gibberish)]}
    figure = text_latency_figure(run)
    bars = {t.name: t for t in figure.data if t.type == "bar"}
    assert bars["ORT"].marker.pattern.shape == "/" and "GIBBERISH" in bars["ORT"].text[0]
    assert bars["PyTorch"].marker.pattern.shape == "" and "GIBBERISH" not in bars["PyTorch"].text[0]
    layout = figure.layout
    titles = [a.text for a in layout.annotations]
    assert titles[:3] == ["Time to first token (ms)", "Total generation time (s)", "Tokens per second"]
    assert layout.yaxis4.title.text == "ms" and layout.yaxis4.type != "log"  # linear, labelled in ms
    # Stacked (one column: each title has the width of the screen), the backends named on each bar chart's axis,
    # time to first token in ms as in the panel.
    assert {t.xaxis for t in figure.data if t.type == "bar"} == {"x", "x2", "x3"}
    assert all(t.orientation == "h" and t.y[0] == tick_label(t.name) for t in figure.data if t.type == "bar")
    assert [t.x[0] for t in figure.data if t.type == "bar" and t.xaxis == "x"] == [250.0, 250.0]
    assert [t.text[0] for t in figure.data if t.name == "ORT"][0] == "250 ms GIBBERISH"


def test_summary_says_whether_ids_agree():
    same = {"results": [result("pytorch", "PyTorch", [1, 2]), result("onnxruntime", "ORT", [1, 2])],
            "prompt_token_ids": [5, 6, 7]}
    assert "identical token ids" in run_summary(same) and "3 tokens" in run_summary(same)
    differ = {"results": [result("pytorch", "PyTorch", [1, 2]), result("onnxruntime", "ORT", [1, 3])],
              "prompt_token_ids": [5]}
    assert "Token ids differ from PyTorch: ORT" in run_summary(differ)
    assert "bad model" in run_summary({"error": "bad model", "results": []})


def test_panels_show_measures_or_the_error_with_its_log():
    text = panel_metrics(result("onnxruntime", "ORT", [1, 2, 3]))
    assert "from cache" in text and "| Time to first token | 250 ms |" in text and "CPUExecutionProvider" in text
    assert "thread" not in text  # an older result without the count
    one = result("onnxruntime", "ORT", [1])
    assert "`CPUExecutionProvider`, 1 thread |" in panel_metrics({**one, "load": {**one["load"], "threads": 1}})
    assert "`CPUExecutionProvider`, 4 threads |" in panel_metrics({**one, "load": {**one["load"], "threads": 4}})
    failed = result("onnxruntime", "ORT", [], error="The worker was killed by SIGSEGV", log_tail="last words")
    assert "SIGSEGV" in panel_metrics(failed) and "last words" in panel_metrics(failed)
    assert "ERROR" in panel_header("ORT", failed, "waiting")
    assert "not selected" in panel_header("ORT", None, "skipped")


def test_image_results_report_psnr_against_the_reference():
    import numpy as np

    from arena.types import BackendImageResult, BackendSpec, ImageRunRequest, ImageRunResult, ImageTimings
    from ui.charts import image_latency_figure
    from ui.format import image_metrics, image_summary

    base = np.zeros((8, 8, 3), np.uint8)
    noisy = base.copy()
    noisy[0, 0] = 40
    timings = ImageTimings(total_s=1.0, text_encoder_s=0.1, unet_s=0.8, vae_s=0.1, step_times_s=(0.4, 0.4))
    specs = (BackendSpec("pytorch"), BackendSpec("onnxruntime"), BackendSpec("onnxruntime", precision="int8"))
    run = ImageRunResult(ImageRunRequest("m", "p", specs), None, (
        BackendImageResult(specs[0], base, timings), BackendImageResult(specs[1], base.copy(), timings),
        BackendImageResult(specs[2], noisy, timings)))
    data = run.to_dict()  # the core's result carries the PSNR and reference flags (no UI recomputation)
    reference, same, different = data["results"]
    assert reference["is_reference"] and reference["psnr_vs_reference_db"] is None
    assert same["identical_to_reference"] and same["psnr_vs_reference_db"] == 99.0
    assert not different["identical_to_reference"] and 30 < different["psnr_vs_reference_db"] < 99
    data["model"] = {"width": 8, "height": 8, "notes": []}
    summary = image_summary(data)
    assert "ONNX Runtime · auto · fp32 identical" in summary and "dB" in summary
    assert "reference" in image_metrics(reference) and "800 ms (2 steps)" in image_metrics(reference)
    figure = image_latency_figure(data)
    assert len([t for t in figure.data if t.type == "scatter"]) == 3
    assert len([t for t in figure.data if t.type == "bar"]) == 3  # text encoder, UNet, VAE stacks


def test_divergence_is_highlighted_and_verdicts_summarized():
    from ui.format import divergence_markdown, panel_header, verdict_summary

    marked = divergence_markdown("Paris is the capital of France.", "Paris is the capital of <Spain>.")
    assert "at character 25" in marked and "<mark>&lt;Spain&gt;.</mark>" in marked
    assert divergence_markdown("same", "same") == ""
    run = {"results": [
        {"label": "PyTorch · cpu · fp32", "verdict": {"kind": "MATCH", "reason": "the reference", "broken": False}},
        {"label": "ONNX Runtime · CPU · int8", "verdict": {"kind": "GIBBERISH", "reason": "loop", "broken": True}}]}
    summary = verdict_summary(run)
    assert "BROKEN" in summary and "1 MATCH, 1 GIBBERISH; broken: ONNX Runtime · CPU · int8" in summary
    header = panel_header("ONNX Runtime", {**run["results"][1], "error": None}, "waiting")
    assert "arena-badge-error'>GIBBERISH" in header


def judged(backend, label, kind, quality, precision="fp32", broken=False, reason="fluent", tokens_per_s=16.0):
    r = result(backend, label, [1, 2], verdict={"kind": kind, "reason": reason, "broken": broken,
                                                "metrics": {"precision": precision, "quality": quality}})
    r["timings"] = {**r["timings"], "tokens_per_s": tokens_per_s}
    return r


FAIR = {"kl": 0.003, "top1": 0.965, "ppl_ratio": 1.012, "ppl_cand": 16.7, "ppl_ref": 16.5, "positions": 206}
REFERENCE = {"kl": 0.0, "top1": 1.0, "ppl_ratio": 1.0, "ppl_cand": 16.5, "ppl_ref": 16.5, "positions": 206}


def test_panels_show_quality_next_to_tokens_per_second():
    text = panel_metrics(judged("onnxruntime", "ORT int8", "DRIFT", FAIR, precision="int8"))
    rows = text.split("\n")
    speed = next(i for i, row in enumerate(rows) if row.startswith("| Tokens/s"))
    assert rows[speed + 1] == "| Precision (judged at) | int8 |"
    assert "| Top-1 agreement (teacher-forced) | 96.5% of 206 positions |" in text
    assert "| KL divergence vs reference | 0.003 nats/token |" in text and "| Perplexity ratio | ×1.012" in text
    reference = panel_metrics(judged("pytorch", "PyTorch", "MATCH", REFERENCE, reason="the reference: fluent"))
    assert "the reference (perplexity 16.50 over 206 positions)" in reference
    server = panel_metrics(judged("server", "Server", "DRIFT", {"unavailable": "no logits"}))
    assert "| Quality vs reference | not available (no logits) |" in server
    assert "arena-badge-idle'>NOT COMPARED" in panel_header("ORT", judged("onnxruntime", "ORT", "NOT COMPARED", {}),
                                                            "done")
    assert "arena-badge-error'>LOSSY" in panel_header("ORT", judged("onnxruntime", "ORT", "LOSSY", FAIR,
                                                                    broken=True), "done")


def test_speed_against_quality_chart_marks_the_reference_and_the_bandwidth_bound():
    from ui.charts import bandwidth_bound, speed_quality_figure

    run = {"reference_index": 0, "model": {"parameters": 134_515_008}, "environment": {"copy_bandwidth_gbs": 10.0},
           "results": [judged("pytorch", "PyTorch", "MATCH", REFERENCE, tokens_per_s=15.0),
                       judged("onnxruntime", "ORT int8", "DRIFT", FAIR, precision="int8", tokens_per_s=19.0),
                       result("onnxruntime", "failed", [], timings=None, error="boom")]}
    figure = speed_quality_figure(run)
    points = [t for t in figure.data if t.type == "scatter"]
    assert [(p.x[0], p.y[0]) for p in points] == [(100.0, 15.0), (96.5, 19.0)]
    assert points[0].marker.symbol == "star" and points[0].name.endswith("(reference)")
    assert bandwidth_bound(134_515_008, "fp32", 10.0) == 10e9 / (134_515_008 * 4)  # ~18.6 tokens/s
    lines = [s for s in figure.layout.shapes if s.type == "line"]
    assert sorted(round(s.y0, 1) for s in lines) == [18.6, 74.3]  # fp32 and int8 bounds
    assert bandwidth_bound(None, "fp32", 10.0) is None and bandwidth_bound(1, "fp32", None) is None
    assert len(speed_quality_figure({}).data) == 0


def test_position_chart_draws_each_candidates_kl_and_marks_a_late_onset():
    """The panel's "where in the sequence" chart, from the measured curve of an export whose positions wrap at 128."""
    import json

    from arena.judging.verdicts import judge_text
    from ui.charts import position_kl_figure

    samples = json.loads((Path(__file__).parent / "corpus" / "sequences.json").read_text())["samples"]
    wrapped = next(s for s in samples if s["source"] == "wrapped-positions-128")["quality"]
    quality = {k: v for k, v in wrapped.items() if k != "kl_positions"} | {"sequences": {"paragraph": wrapped}}
    verdict = judge_text("Fluent.", [1, 2], "fp32", reference_ids=[1, 2], quality=quality, reference_precision="fp32")
    run = {"reference_index": 0, "results": [
        {"backend": "pytorch", "label": "PyTorch", "verdict": {"kind": "MATCH", "metrics": {}}},
        {"backend": "onnxruntime", "label": "ONNX Runtime", "verdict": verdict.to_dict()}]}
    figure = position_kl_figure(run)
    assert len(figure.data) == 1 and figure.data[0].name == "ONNX Runtime (WRONG)"
    assert len(figure.data[0].y) == len(wrapped["kl_positions"])
    onset = [s for s in figure.layout.shapes if s.x0 == s.x1]
    assert [s.x0 for s in onset] == [129]  # position 128, drawn 1-based
    assert len(position_kl_figure({}).data) == 0


def test_a_stopped_run_is_stopped_not_broken():
    stopped = {"label": "ONNX Runtime · cpu · fp32", "error": "Stopped by you.", "stopped": True, "verdict": None,
               "token_ids": [], "text": "Running models on-premises can"}
    done = {"label": "PyTorch · cpu · fp32", "error": None, "stopped": False, "verdict": None, "token_ids": [1, 2],
            "text": "Running models"}
    header = panel_header("ONNX Runtime", stopped, "idle")
    assert "STOPPED" in header and "ERROR" not in header and "arena-badge-idle" in header
    summary = run_summary({"phase": "stopped", "results": [done, stopped], "prompt_token_ids": [5, 6, 7]})
    assert summary.startswith("<span class='arena-badge arena-badge-idle'>STOPPED</span> You stopped the run")
    assert "PyTorch · cpu · fp32 finished and is shown" in summary and "nothing was judged" in summary
    assert "BROKEN" not in summary and "ERROR" not in summary


def test_huge_figures_read_in_powers_of_ten():
    assert ratio_text(1.012) == "×1.012" and ratio_text(999.4) == "×999.400"
    assert ratio_text(8559575551647200.0) == "×8.6e15" and ratio_text(12345.0) == "×1.2e4"
    assert ratio_text(None) == "–" and ratio_text(float("nan")) == "–" and ratio_text(float("inf")) == "×∞"
    wrong = {**FAIR, "ppl_ratio": 8559575551647200.0, "ppl_cand": 1.4e17}
    text = panel_metrics(judged("onnxruntime", "ORT", "WRONG", wrong, broken=True))
    assert "| Perplexity ratio | ×8.6e15 (1.4e17 vs 16.50) |" in text, text
    assert "8559575551647200" not in text


def test_every_badge_reads_at_wcag_aa_and_the_css_mirrors_the_colour_map():
    css = (ROOT / "assets" / "arena.css").read_text()
    rules = dict(re.findall(r"\.arena-badge-([a-z]+) \{([^}]*)\}", css))
    assert set(rules) == set(STATES), rules.keys()
    for state, (background, text) in STATES.items():
        assert f"background: {background};" in rules[state] and f"color: {text};" in rules[state], state
        assert contrast(background, text) >= 4.5, (state, round(contrast(background, text), 2))
    assert contrast("#ffffff", "#000000") == 21.0
    # Drift (amber) is not the progress colour, and the reference is never red.
    assert fill("drift") != fill("waiting") and fill("reference") != fill("error")


def test_the_colour_map_colours_badges_and_every_chart():
    from ui.charts import image_latency_figure, position_kl_figure, speed_quality_figure, where_figure

    where = {"unit": "model.layers.0", "error": 3.0, "threshold": 0.01, "cause": "x",
             "per_unit": [{"unit": "model.embed_tokens", "error": 0.001}, {"unit": "model.layers.0", "error": 3.0}]}
    broken = judged("onnxruntime", "ORT int8", "GIBBERISH", {**FAIR, "sequences": {"paragraph": {
        "kl_positions": [5.0, 6.0]}}}, precision="int8", broken=True)
    broken["verdict"]["metrics"]["where"] = where
    drift = judged("onnxruntime", "ORT int4", "DRIFT", {**FAIR, "sequences": {"paragraph": {
        "kl_positions": [0.01, 0.02]}}}, precision="int4")
    match = judged("onnxruntime", "ORT fp32", "MATCH", {**FAIR, "sequences": {"paragraph": {
        "kl_positions": [1e-7, 1e-7]}}})
    reference = judged("pytorch", "PyTorch", "MATCH", REFERENCE, reason="the reference: fluent")
    run = {"reference_index": 0, "results": [reference, match, drift, broken]}
    expected = {"PyTorch": fill("reference"), "ORT fp32": fill("ok"), "ORT int4": fill("drift"),
                "ORT int8": fill("error")}
    assert fill("reference") not in (fill("error"), fill("ok"))

    def colour_of(trace):
        return trace.marker.color if trace.type == "bar" or trace.mode.startswith("markers") else trace.line.color

    for figure in (text_latency_figure(run), speed_quality_figure(run), position_kl_figure(run), where_figure(run)):
        drawn = [t for t in figure.data if t.name]
        assert drawn
        for trace in drawn:
            label = next(name for name in sorted(expected, key=len, reverse=True) if trace.name.startswith(name))
            assert colour_of(trace) == expected[label], (figure.layout.title.text, trace.name, colour_of(trace))
    headers = {r["label"]: panel_header(r["label"], r, "done") for r in run["results"]}
    assert "arena-badge-reference'>REFERENCE" in headers["PyTorch"]
    assert "arena-badge-ok'>MATCH" in headers["ORT fp32"] and "arena-badge-drift'>DRIFT" in headers["ORT int4"]
    assert "arena-badge-error'>GIBBERISH" in headers["ORT int8"]
    assert "arena-badge-waiting" in panel_header("ORT", None, "generating", "3/64")
    image = {"reference_index": 0, "results": [
        {"label": "PyTorch", "is_reference": True, "timings": {"step_times_s": [0.1], "text_encoder_s": 0.1,
                                                               "unet_s": 0.1, "vae_s": 0.1},
         "verdict": {"kind": "MATCH", "reason": "the reference: a picture", "broken": False}},
        {"label": "ORT fp16", "timings": {"step_times_s": [0.1], "text_encoder_s": 0.1, "unet_s": 0.1, "vae_s": 0.1},
         "verdict": {"kind": "NAN", "reason": "x", "broken": True}}]}
    lines = [t for t in image_latency_figure(image).data if t.type == "scatter"]
    assert [t.line.color for t in lines] == [fill("reference"), fill("error")]


def test_the_summary_table_has_a_row_per_backend_with_its_badge_speed_and_quality():
    wrong = {**FAIR, "ppl_ratio": 8559575551647200.0}
    run = {"reference_index": 0, "results": [
        judged("pytorch", "PyTorch", "MATCH", REFERENCE, reason="the reference: fluent", tokens_per_s=15.0),
        judged("onnxruntime", "ORT int8", "WRONG", wrong, precision="int8", broken=True, tokens_per_s=19.25),
        result("onnxruntime", "failed", [], timings=None, error="boom")]}
    rows = summary_rows(run)
    assert [(r["label"], r["state"], r["verdict"]) for r in rows] == [
        ("PyTorch", "reference", "REFERENCE"), ("ORT int8", "error", "WRONG"), ("failed", "error", "ERROR")]
    assert [text for text, _key in rows[1]["cells"]] == ["19.2", "250 ms", "1,000 MB", "96.5%", "0.003", "×8.6e15"]
    assert [text for text, _key in rows[0]["cells"]][3:] == ["reference"] * 3
    assert [text for text, _key in rows[2]["cells"]] == ["–", "–", "1,000 MB", "–", "–", "–"]
    html = summary_table(run)
    assert html.count("<tr>") == 4 and "arena-summary-box" in html and "<th scope='row'>ORT int8</th>" in html
    assert "arena-badge-error'>WRONG" in html and "TTFT" in html and "data-sort=19.25" in html
    assert summary_table({"results": []}) == ""
    image = {"reference_index": 0, "results": [
        {"label": "PyTorch", "is_reference": True, "timings": {"step_times_s": [0.02, 0.005, 0.004]},
         "load": {"memory_mb": 600.0}, "verdict": {"kind": "MATCH", "reason": "the reference", "broken": False}},
        {"label": "ORT", "timings": {"step_times_s": [0.02, 0.006]}, "load": {"memory_mb": 900.0},
         "psnr_vs_reference_db": 41.23, "verdict": {"kind": "MATCH", "reason": "x", "broken": False}}]}
    cells = [[text for text, _key in row["cells"]] for row in summary_rows(image, "image")]
    assert cells == [["5.0 ms", "600 MB", "reference"], ["13 ms", "900 MB", "41.2 dB"]]
    assert "Median step" in summary_table(image, "image") and "Tokens/s" not in summary_table(image, "image")


def test_a_backend_a_stopped_run_never_reached_is_its_header_line_without_an_answer_box():
    from types import SimpleNamespace

    from ui.text_tab import render_run

    def panel(name):
        return SimpleNamespace(name=name, title=name, controls=SimpleNamespace(unavailable=""),
                               header=f"{name}-header", answer=f"{name}-answer", metrics=f"{name}-metrics")

    tab = SimpleNamespace(**{part: part for part in ("status", "summary", "chart", "quality_chart", "position_chart",
                                                     "where_chart", "result_json")},
                          backends=[panel("pytorch"), panel("onnxruntime")])
    run = {"phase": "stopped", "results": [
        {**result("pytorch", "PyTorch", [1, 2]), "stopped": True, "error": "Stopped by you.", "text": "Rivers"},
        {**result("onnxruntime", "ORT", []), "stopped": True, "error": "Not run: you stopped the run.", "text": ""}]}
    updates = render_run(tab, run, {"pytorch", "onnxruntime"})
    assert updates["pytorch-answer"]["visible"] and updates["pytorch-answer"]["value"] == "Rivers"
    assert not updates["onnxruntime-answer"]["visible"]
    assert "STOPPED" in updates["onnxruntime-header"] and "Not run" in updates["onnxruntime-metrics"]
    assert updates["summary"].count("arena-badge-idle'>STOPPED") == 2


def test_a_link_page_is_ready_not_waiting():
    """A page opened from a link has its settings filled in and nothing running: its ticked backends read "ready
    to run" (grey), never the "waiting" of a run on its way."""
    from ui.format import idle_panel, panel_header

    assert idle_panel("pytorch", {"pytorch"}, "", ready=True) == ("ready", "")
    assert idle_panel("pytorch", {"pytorch"}, "") == ("waiting", "")
    assert "arena-badge-idle'>ready to run<" in panel_header("PyTorch", None, "ready")


def test_the_image_chart_names_a_backend_that_failed():
    """A broken image backend has no timings (its VAE gave NaN): the chart says so instead of leaving it out
    (and builds: plotly refuses a "container" reference on an annotation)."""
    from ui.charts import image_latency_figure

    timings = {"total_s": 1.0, "text_encoder_s": 0.1, "unet_s": 0.8, "vae_s": 0.1, "step_times_s": [0.4, 0.4]}
    run = {"results": [{"label": "PyTorch", "backend": "pytorch", "timings": timings, "verdict": {"kind": "MATCH"}},
                       {"label": "ONNX Runtime", "backend": "onnxruntime", "timings": None, "error": "NaN",
                        "verdict": {"kind": "NAN", "broken": True}}], "reference_index": 0}
    figure = image_latency_figure(run)
    assert any("Not timed, the run failed: ONNX Runtime (NAN)" in a.text for a in figure.layout.annotations)


def test_a_run_sends_an_image_or_a_chart_again_only_when_it_changed():
    """Every step of a run renders every output; a picture sent again is encoded again and a chart drawn again, so
    only the outputs that changed go to the page."""
    from types import SimpleNamespace

    import gradio as gr
    import numpy as np

    from ui.charts import image_latency_figure
    from ui.downloads import show_and_keep

    first, second = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 7, np.uint8)
    steps = [SimpleNamespace(step=i, error=None, results=[object()], phase="stopped" if i == 3 else "running",
                             image=first if i < 2 else second) for i in range(4)]

    def render(step):
        return {"status": f"step {step.step}", "image": gr.update(value=step.image.copy(), visible=True),
                "chart": image_latency_figure({})}

    sent = list(show_and_keep(None, None, "image", iter(steps), render, None))
    assert [sorted(update) for update in sent] == [["chart", "image", "status"], ["status"], ["image", "status"],
                                                   ["status"]]
    assert sent[2]["image"]["value"][0, 0, 0] == 7


def test_an_empty_chart_says_what_will_appear_in_lines_a_phone_can_hold():
    """Before a run each chart says what it will show; one 60-character line ran past both edges of the plot at
    390 px. The note wraps to short lines on a white ground."""
    from ui.charts import (
        image_latency_figure,
        position_kl_figure,
        speed_quality_figure,
        text_latency_figure,
        where_figure,
    )

    for figure in (text_latency_figure({}), image_latency_figure({}), speed_quality_figure({}),
                   position_kl_figure({}), where_figure({})):
        notes = [a.text for a in figure.layout.annotations if a.text and "<br>" in a.text or len(a.text or "") > 20]
        assert notes, figure.layout.annotations
        assert all(len(line) <= 28 for note in notes for line in note.split("<br>")), notes
