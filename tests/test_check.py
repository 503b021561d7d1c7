"""Headless judgement of exports this project has never seen: ONNX exports (optimum's layout) of the embedded
model broken on purpose here, flagged through the CLI and the API; the good export of the same model passes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from arena.preparing.catalog import DEFAULT_TEXT_MODEL
from arena.types import BackendSpec, TextRunRequest
from tests.support import ROOT

pytestmark = pytest.mark.slow
PROMPT = "Why should one run machine learning models on-premises?"


def report_lines(report: dict) -> list[str]:
    from arena.judging.check import summary_lines as lines

    return lines(report)


def edited_copy(good: Path, target: Path, edit) -> Path:
    """``target``: the export at ``good`` with ``edit(model)`` applied to its graph."""
    import onnx

    shutil.copytree(good, target, ignore=shutil.ignore_patterns("*.onnx", "*.onnx_data", "manifest.json"))
    model = onnx.load(str(good / "model.onnx"))
    edit(model)
    onnx.save(model, str(target / "model.onnx"))
    return target


@pytest.fixture(scope="module")
def exports(arena, tmp_path_factory):
    """The embedded model's good export, and copies broken in two ways a conversion goes wrong."""
    from onnx import helper

    from arena.preparing.demos import damage_text_export

    result = arena.run_text_to_end(TextRunRequest(model=DEFAULT_TEXT_MODEL, prompt="hi", max_new_tokens=2,
                                                  backends=(BackendSpec("onnxruntime"),)))
    good = Path(result.results[0].load.artifact_dir)
    out = {"good": good}
    root = tmp_path_factory.mktemp("broken-exports")

    def broken_copy(name, edit):
        out[name] = edited_copy(good, root / name, edit)

    def negated_logits(model):  # a sign error in the last op: greedy picks the least likely token
        for node in model.graph.node:
            node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
        model.graph.node.append(helper.make_node("Neg", ["logits_raw"], ["logits"], name="broken_neg"))

    # weights damaged in conversion (every attention/MLP matrix gets noise): the dashboard's own broken example
    (root / "noisy-weights").mkdir()
    damage_text_export(str(good), str(root / "noisy-weights"))
    out["noisy-weights"] = root / "noisy-weights"
    broken_copy("negated-logits", negated_logits)
    return out


def cli_check(*exports: Path, cache: Path, model: str = DEFAULT_TEXT_MODEL, prompt: str = PROMPT, extra=()):
    """``python -m arena check`` on one or several exports in one process; returns (exit code, reports, stderr)."""
    env = dict(os.environ, ARENA_CACHE_DIR=str(cache))
    candidates = [arg for export in exports for arg in ("--candidate", f"onnxruntime:onnx_dir={export}")]
    done = subprocess.run([sys.executable, "-m", "arena", "check", "--model", model, *candidates, "--prompt", prompt,
                           "--json", *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stdout[-1500:] + done.stderr[-1500:]
    reports = json.loads(done.stdout)
    return done.returncode, reports if len(exports) > 1 else [reports], done.stderr[-1500:]


def test_api_check_flags_a_broken_export(app_server, exports):
    from gradio_client import Client

    client = Client(app_server["url"], verbose=False)
    broken = client.predict(model=DEFAULT_TEXT_MODEL, candidate={"backend": "onnxruntime",
                                                                 "onnx_dir": str(exports["negated-logits"])},
                            prompts=[PROMPT], reach=0, api_name="/check")
    assert broken["broken"] is True and broken["checks"][0]["verdict"]["kind"] == "GIBBERISH"
    good = client.predict(model=DEFAULT_TEXT_MODEL, candidate={"backend": "onnxruntime",
                                                               "onnx_dir": str(exports["good"])},
                          prompts=[PROMPT], reach=0, api_name="/check")
    assert good["broken"] is False and good["checks"][0]["verdict"]["kind"] == "MATCH"
    missing = client.predict(model="no/such-model-here", candidate="onnxruntime", api_name="/check")
    assert missing["broken"] is True and missing["error"]


@pytest.fixture(scope="module")
def precision_exports(exports, tmp_path_factory):
    """Exports of the same model that all write fluent text on a short answer: fp32 with one layer's MLP scaled by
    0.7 (a math change from the first token), three bugs that start late in the sequence (positions clamped at 100,
    positions wrapping every 128, logn attention past 128), and a fair 8-bit weight-only conversion (weights rounded
    through fp16 are judged in test_verdicts, from their measured curve)."""

    from tests.support.export_edits import (
        clamp_positions,
        logn_attention,
        scale_cached_values,
        scale_one_mlp,
        swap_cached_key_value,
        weight_only_int8,
        wrap_positions,
    )

    root, good = tmp_path_factory.mktemp("precision-exports"), exports["good"]
    # The graph exact, its own files not: another end token and another chat template (deployment would differ).
    other_files = edited_copy(good, root / "other-end-token", lambda model: None)
    generation = json.loads((other_files / "generation_config.json").read_text()) | {"eos_token_id": 0}
    (other_files / "generation_config.json").write_text(json.dumps(generation))
    (other_files / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    return {"other-end-token": other_files} | {name: edited_copy(good, root / name, edit)
            for name, edit in (("scaled-mlp", scale_one_mlp), ("weight-only-int8", weight_only_int8),
                               ("clamped-positions", clamp_positions), ("wrapped-positions", wrap_positions),
                               ("logn-attention", logn_attention), ("cache-values-scaled", scale_cached_values),
                               ("cache-swapped", swap_cached_key_value))}


def test_cli_flags_broken_exports_but_not_a_fair_8bit_one(exports, precision_exports, session_cache):
    """One ``check`` process, three exports (each CLI run costs fresh workers loading SmolLM2): weights damaged in
    conversion, an fp32 math change that still writes fluent text, and a fair 8-bit weight-only export (the exit
    code is the worst of the three; the good export passes through the API below, the same check function)."""
    late = ("clamped-positions", "wrapped-positions", "logn-attention")
    cache_only = ("cache-values-scaled", "cache-swapped", "other-end-token")
    code, reports, stderr = cli_check(exports["noisy-weights"], precision_exports["scaled-mlp"],
                                      precision_exports["weight-only-int8"],
                                      *(precision_exports[name] for name in late + cache_only), cache=session_cache,
                                      extra=("--reach", "0"))  # the long reach: its own test below
    noisy, wrong, fair, clamped, wrapped, logn, scaled_cache, swapped_cache, other_files = reports
    assert code == 1 and [r["broken"] for r in reports] == [True, True, False, True, True, True, True, True,
                                                            False], stderr
    # The export's own files would stop and prompt differently in deployment: said beside a verdict that holds.
    verdict = other_files["checks"][0]["verdict"]
    assert verdict["kind"] == "MATCH" and "Warning: the export's files end generation at token(s) [0]" in \
        verdict["reason"], verdict["reason"]
    assert "chat template differs" in verdict["reason"] and len(verdict["metrics"]["warnings"]) == 2
    assert "warnings" not in fair["checks"][0]["verdict"]["metrics"]  # the arena's own export: its files agree
    # Bugs of the KV cache alone: a full pass is exact (teacher-forced figures at the floor, first-step logits
    # within 1e-4), every cached step reads a wrong cache: WRONG, with the first bad step and "decode path".
    for report in (scaled_cache, swapped_cache):
        verdict = report["checks"][0]["verdict"]
        assert verdict["kind"] == "WRONG" and "its decode path (KV cache) leaves the reference at step" in \
            verdict["reason"], verdict["reason"]
        assert "while its full pass over the same tokens agrees" in verdict["reason"], verdict["reason"]
        assert verdict["metrics"]["quality"]["top1"] >= 0.99 and verdict["metrics"]["logits"]["max_abs"] < 1e-3
        assert max(verdict["metrics"]["decode"]["full_kl_steps"]) < 1e-4 < max(verdict["metrics"]["decode"][
            "kl_steps"])
    assert fair["checks"][0]["verdict"]["metrics"]["decode"]["steps"] > 0  # measured, not judged at another precision
    verdict = noisy["checks"][0]["verdict"]
    assert verdict["kind"] == "GIBBERISH", verdict
    assert noisy["checks"][0]["reference_verdict"]["kind"] == "MATCH"
    verdict = wrong["checks"][0]["verdict"]
    assert verdict["kind"] == "WRONG" and verdict["metrics"]["precision"] == "fp32", verdict
    assert "the model's math differs" in verdict["reason"]
    assert wrong["checks"][0]["output"] != wrong["checks"][0]["reference_output"]  # fluent, yet other tokens
    verdict = fair["checks"][0]["verdict"]
    assert verdict["kind"] in ("MATCH", "DRIFT"), verdict
    quality = verdict["metrics"]["quality"]
    assert verdict["metrics"]["precision"] == "int8" and quality["top1"] >= 0.9 and quality["kl"] <= 0.1, quality
    # Late bugs: the short answer is the reference's, token for token; 512 teacher-forced positions of the fixed
    # paragraph show where the math changes.
    for report, first, last in ((clamped, 101, 101), (wrapped, 128, 128), (logn, 128, 300)):
        check_ = report["checks"][0]
        verdict = check_["verdict"]
        assert verdict["kind"] == "WRONG" and check_["output"] == check_["reference_output"], verdict
        assert first <= check_["onset_position"] <= last, (check_["onset_position"], verdict["reason"])
        assert verdict["metrics"]["onset"]["kind"] == "late" and verdict["metrics"]["onset"]["sequence"] == "paragraph"
        assert "positions of the paragraph, then KL" in verdict["reason"], verdict["reason"]
    assert "identical for the first 101 positions" in clamped["checks"][0]["verdict"]["reason"]
    # ... and localized where they start: the units compared from the onset on name the first layer's attention.
    for report in (clamped, wrapped):
        where = report["where"]
        assert where["unit"] == "model.layers.0" and where["from"]["sequence"] == "paragraph", where
        assert "attention" in where["cause"], where["cause"]
    for report in (scaled_cache, swapped_cache):  # every unit agrees on a full pass: "where" says the cache
        assert report["where"]["unit"] == "the KV cache", report["where"]
        assert any(line.startswith("WHERE     the KV cache") for line in report_lines(report)), report
    # A math change from the first token is still WRONG for its first-step logits, not for a late onset.
    assert wrong["checks"][0]["onset_position"] is None or wrong["checks"][0]["onset_position"] < 30


def test_check_reaches_past_the_paragraph(exports, session_cache, tmp_path_factory):
    """The long reach (768 positions here; ``check`` defaults to 4,096): positions that break after 650 are WRONG
    with their onset in the long text and localized there; a decode graph whose positions break after 600 on
    one-token steps only (every full pass exact, the answer far shorter) is WRONG from the long text's last
    positions through its KV cache, and "where" says the cache; the good export stays MATCH at every position."""
    from tests.support.export_edits import clamp_cached_positions, clamp_positions

    root, good = tmp_path_factory.mktemp("reach-exports"), exports["good"]
    clamped = edited_copy(good, root / "clamped-650", lambda model: clamp_positions(model, 650))
    cached = edited_copy(good, root / "cached-clamped-600", lambda model: clamp_cached_positions(model, 600))
    code, (fine, late, cache_bug), stderr = cli_check(good, clamped, cached, cache=session_cache,
                                                      extra=("--reach", "768", "--max-new-tokens", "8"))
    assert code == 1 and [r["broken"] for r in (fine, late, cache_bug)] == [False, True, True], stderr
    for report in (fine, late, cache_bug):
        assert report["reach"] == {"asked": 768, "positions": 768, "note": ""}, report["reach"]
        assert report_lines(report)[0].startswith("REACH     768 positions teacher-forced")
    verdict = fine["checks"][0]["verdict"]
    long_text = verdict["metrics"]["quality"]["sequences"]["long text"]
    assert verdict["kind"] == "MATCH" and long_text["positions"] == 767 and max(long_text["kl_positions"]) < 1e-4
    assert len(long_text["cached"]["kl_steps"]) == 32 and max(long_text["cached"]["kl_steps"]) < 1e-4
    check_ = late["checks"][0]
    assert check_["verdict"]["kind"] == "WRONG" and check_["output"] == check_["reference_output"]
    assert 650 <= check_["onset_position"] <= 652 and check_["verdict"]["metrics"]["onset"]["sequence"] == "long text"
    assert "positions of the long text, then KL" in check_["verdict"]["reason"], check_["verdict"]["reason"]
    assert late["where"]["unit"] == "model.layers.0" and late["where"]["from"]["sequence"] == "long text", late["where"]
    verdict = cache_bug["checks"][0]["verdict"]
    assert verdict["kind"] == "WRONG", verdict["reason"]
    assert "position 736 of the long text (cached step 2 of 32 after a 736-token prefill)" in verdict["reason"]
    assert "while its full pass over the same tokens agrees" in verdict["reason"]
    assert "onset" not in verdict["metrics"]  # every full-pass position agrees
    assert max(verdict["metrics"]["quality"]["sequences"]["long text"]["kl_positions"]) < 1e-4
    assert cache_bug["where"]["unit"] == "the KV cache" and "of the long text" in cache_bug["where"]["cause"]


@pytest.fixture(scope="module")
def image_exports(arena, tmp_path_factory):
    """The embedded image model's pipeline export, and a copy whose UNet weights were damaged."""
    import onnx
    from onnx import numpy_helper

    from arena.types import ImageRunRequest

    result = arena.run_image_to_end(ImageRunRequest(model="scenes-64", prompt="a red circle on a blue background",
                                                    backends=(BackendSpec("onnxruntime"),), steps=2))
    good = Path(result.results[0].load.artifact_dir)
    broken = tmp_path_factory.mktemp("broken-image-export") / "export"
    shutil.copytree(good, broken)
    unet = onnx.load(str(broken / "unet" / "model.onnx"))
    rng = np.random.default_rng(1)
    for init in unet.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.ndim == 4 and array.dtype == np.float32:  # every convolution kernel
            init.CopyFrom(numpy_helper.from_array(
                array + rng.standard_normal(array.shape).astype(np.float32) * array.std(), init.name))
    onnx.save(unet, str(broken / "unet" / "model.onnx"))

    def one_weight(name: str, part: str, ndim: int, factor: float) -> Path:
        """One weight of one component scaled: the picture stays close (over 50 dB), the component does not."""
        folder = tmp_path_factory.mktemp(name) / "export"
        shutil.copytree(good, folder)
        model = onnx.load(str(folder / part / "model.onnx"))
        init = [i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == ndim
                and numpy_helper.to_array(i).size >= 1024][2]
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
        onnx.save(model, str(folder / part / "model.onnx"))
        return folder

    rounded = tmp_path_factory.mktemp("rounded-image-export") / "export"
    shutil.copytree(good, rounded)
    from tests.support.export_edits import fp16_rounded

    for part in ("text_encoder", "unet", "vae_decoder"):
        model = onnx.load(str(rounded / part / "model.onnx"))
        fp16_rounded(model, 256)
        onnx.save(model, str(rounded / part / "model.onnx"))
    return {"good": good, "broken": broken, "unet-weight": one_weight("unet-weight", "unet", 4, 1.1),
            "text-encoder-weight": one_weight("te-weight", "text_encoder", 2, 1.1), "rounded": rounded}


def test_cli_judges_pipeline_exports(image_exports, session_cache):
    code, (good, broken, unet, text_encoder, rounded), stderr = cli_check(
        *(image_exports[name] for name in ("good", "broken", "unet-weight", "text-encoder-weight", "rounded")),
        cache=session_cache, model="scenes-64", prompt="a green circle on a white background", extra=("--steps", "10"))
    assert good["task"] == broken["task"] == "image", stderr
    assert code == 1 and not good["broken"] and good["checks"][0]["verdict"]["kind"] == "MATCH", good
    assert broken["broken"] and broken["checks"][0]["verdict"]["kind"] in ("DIFFERENT", "NOISE", "BLANK"), broken
    # fp32 has a floor per component: a close picture with one wrong component is WRONG, named; a fair export whose
    # weights were rounded through fp16 (components ~2e-4 off) is not.
    for report, words in ((unet, "its UNet computes something else"),
                          (text_encoder, "its text encoder computes something else")):
        verdict = report["checks"][0]["verdict"]
        assert report["broken"] and verdict["kind"] == "WRONG" and words in verdict["reason"], verdict["reason"]
    assert not rounded["broken"] and rounded["checks"][0]["verdict"]["kind"] == "MATCH", rounded
