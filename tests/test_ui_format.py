"""Pure UI renderers: the chart and the panel text built from a result dict."""

from ui.charts import text_latency_figure
from ui.format import panel_header, panel_metrics, run_summary


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
    assert layout.yaxis.title.text == "seconds" and layout.yaxis3.title.text == "tokens per second"
    assert layout.yaxis4.title.text == "milliseconds" and layout.yaxis4.type != "log"  # linear, labelled in ms


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
    assert "from cache" in text and "250 ms" in text and "CPUExecutionProvider" in text
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
    from pathlib import Path

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
