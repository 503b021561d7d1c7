"""Typed results: the verdict kinds declared once (arena/judging/kinds.py), `Where` and `Quality`
(arena/judging/results.py): the same dicts back from ``to_dict()``, one sentence each, and every renderer (the
panel, the chart, the report, the check's lines) showing the same `Where` from the result's JSON alone."""

from __future__ import annotations

import ast
import json

import numpy as np
import pytest

from arena.judging import verdicts
from arena.judging.kinds import IMAGE_BROKEN, KINDS, TEXT_BROKEN, VerdictKind, kind_state
from arena.judging.localize import localize
from arena.judging.localize_image import localize_components
from arena.judging.results import Quality, Where
from arena.judging.verdicts import Verdict
from tests.support import ROOT


# --- verdict kinds ------------------------------------------------------------------------------------------
def test_the_broken_sets_and_colours_come_from_the_declarations():
    assert TEXT_BROKEN == {"GIBBERISH", "EMPTY", "ERROR", "WRONG", "LOSSY"}
    assert IMAGE_BROKEN == {"DIFFERENT", "BLANK", "NOISE", "NAN", "ERROR", "WRONG"}
    from ui.colors import STATES, state_of

    for kind in KINDS.values():
        assert kind.state in STATES and kind.tasks and kind.meaning, kind
        assert (kind.state == "error") == kind.broken, kind  # red means broken, and only that
        verdict = Verdict(kind.name, "why")
        assert verdict.broken == kind.broken and verdict.declared is kind
        assert state_of({"verdict": verdict.to_dict()}) == kind.state
    assert kind_state("MATCH") == "ok" and kind_state("NOT COMPARED") == "idle" and kind_state("DRIFT") == "drift"
    assert kind_state("SOMETHING NEW") == "drift"  # a kind not declared: amber, as before
    assert json.loads(json.dumps(KINDS["WRONG"].to_dict()))["tasks"] == ["text", "image"]
    assert KINDS["LOSSY"].sentence().startswith("LOSSY (broken; text): a reduced precision")


def test_a_verdict_of_an_undeclared_kind_or_against_its_declaration_is_refused():
    with pytest.raises(ValueError, match="not declared"):
        Verdict("MAYBE", "why")
    with pytest.raises(ValueError, match="broken by its declaration"):
        Verdict("MATCH", "why", True)
    assert Verdict("WRONG", "why", True, {"a": 1}).to_dict() == {"kind": "WRONG", "reason": "why", "broken": True,
                                                                 "metrics": {"a": 1}}


def test_every_kind_the_rules_give_is_declared_and_every_declared_kind_has_a_rule():
    """A new kind is one `VerdictKind` line and its rule: the kinds named in `Verdict(...)` calls of
    arena/judging/verdicts.py are the declared ones."""
    tree = ast.parse((ROOT / "arena/judging/verdicts.py").read_text())
    given = {node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "Verdict" and node.args and isinstance(node.args[0], ast.Constant)}
    given |= {"NAN"}  # judge_image's error: kind = "NAN" if "NaN" in error else "ERROR"
    assert given == set(KINDS), given ^ set(KINDS)
    assert all(isinstance(k, VerdictKind) for k in KINDS.values())


# --- Where --------------------------------------------------------------------------------------------------
UNITS = ["model.embed_tokens", "model.layers.0.self_attn", "model.layers.0.mlp", "model.layers.0",
         "model.layers.1.self_attn", "model.layers.1.mlp", "model.layers.1", "model.norm", "lm_head"]


def text_outputs(broken: dict[str, float] | None = None) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    reference = {u: rng.normal(size=(1, 4, 8)) for u in UNITS}
    candidate = {u: reference[u] * (1 + (broken or {}).get(u, 0.0)) for u in UNITS}
    return reference, candidate


def image_outputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"text_encoder": (2, 16, 32), "unet": (2, 4, 8, 8), "vae_decoder": (1, 3, 32, 32)}
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}


# Relative errors per unit of `UNITS` at int4: growing evenly past the tolerance (0.5), and layer 1's MLP jumping.
EVEN = (0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.4, 0.6)
JUMP = (0.1, 0.15, 0.15, 0.15, 0.1, 2.0, 2.0, 2.0, 2.0)


def some_wheres() -> list[dict]:
    after = {u: 0.5 for u in UNITS[UNITS.index("model.layers.1.self_attn"):]}
    named = localize(*text_outputs(after), UNITS, "fp32")
    reference = image_outputs()
    wheres = [named, named | {"from": {"sequence": "output", "position": 12}},
              localize(*text_outputs(), UNITS, "fp32"),
              localize(*text_outputs(dict(zip(UNITS, EVEN, strict=True))), UNITS, "int4"),  # "over", no unit
              localize(*text_outputs(dict(zip(UNITS, JUMP, strict=True))), UNITS, "int4"),
              localize(*text_outputs(), UNITS, "fp32") | {"unit": "the KV cache", "error": None, "cause": "the cache"},
              localize_components(reference, dict(reference) | {"vae_decoder": reference["vae_decoder"] * np.inf},
                                  "fp16"),
              localize_components(reference, dict(reference), "fp32", errors={"text_encoder": "boom"})]
    return [json.loads(json.dumps(w)) for w in wheres]  # as the UI process gets them


def test_where_gives_back_the_same_dict():
    for where in some_wheres():
        assert Where.from_dict(where).to_dict() == where, where
    jump_none = some_wheres()[0] | {"jump": None}  # an optional key written as None stays, as written
    assert Where.from_dict(jump_none).to_dict() == jump_none


def test_the_where_sentences():
    named, late, none, even, jump, cache, nan, failed = (Where.from_dict(w) for w in some_wheres())
    assert named.sentence().startswith("model.layers.1 is the first unit whose output leaves the reference's "
                                       "(relative error 0.5, tolerance 0.001; inside it: attention 0.5, mlp 0.5). "
                                       "Likely cause: the attention of model.layers.1"), named.sentence()
    assert named.sentence(markup=True).startswith("`model.layers.1` is the first unit")
    assert " from position 12 of the answer on, where the math changes (" in late.sentence()
    assert none.sentence() == "No layer breaks: every unit stays within the tolerance 0.001."
    assert even.sentence().startswith("No layer breaks: lm_head reaches 0.6, over the tolerance 0.5, yet no unit "
                                      "stands out"), even.sentence()
    assert jump.sentence().startswith("model.layers.1 is the first unit whose output leaves the reference's (relative "
                                      "error 2, 13.3x the units just before it, tolerance 0.5; inside it: attention "
                                      "0.1, mlp 2). Likely cause: the MLP of model.layers.1"), jump.sentence()
    assert cache.is_kv_cache and cache.sentence() == "The KV cache: the cache."
    assert nan.is_image and nan.sentence(markup=True).startswith(
        "The **VAE decoder** is the first component whose output leaves the reference's on the same input "
        "(relative error NaN/Inf, tolerance 0.02). Likely cause: overflow in the VAE decoder"), nan.sentence()
    assert "VAE decoder 3072 NaN/Inf values" in nan.figures()
    assert failed.unit == "text_encoder" and "text encoder failed" in failed.sentence()


def test_every_renderer_shows_the_same_where_from_the_json():
    """The panel's "Where?" line, the chart, the report's table and the check's WHERE line all read one `Where`
    (this replaces test_localize_image.py's check of the four on a real pipeline run)."""
    from arena.judging.check import summary_lines
    from arena.sharing.reports import report_markdown
    from ui.charts import where_figure
    from ui.format import image_metrics

    where = some_wheres()[6]  # the VAE decoder's overflow
    verdict = Verdict("NAN", "the image has NaN or Inf pixels", metrics={"where": where}).to_dict()
    reference = Verdict("MATCH", "the reference: a picture on its own").to_dict()
    run = {"request": {"model": "m"}, "reference_index": 0,
           "results": [{"label": "PyTorch", "verdict": reference, "is_reference": True},
                       {"label": "ONNX Runtime", "verdict": verdict, "options": {"backend": "onnxruntime"}}]}
    panel = image_metrics(run["results"][1])
    assert f"**Where?** {Where.from_dict(where).sentence(markup=True)}" in panel, panel
    assert "text encoder " in panel and "UNet " in panel and "NaN/Inf values" in panel  # every component's figures
    assert list(where_figure(run).data[0].x) == ["text_encoder", "unet", "vae_decoder"]
    report = report_markdown(run, "image")
    assert "| First divergent component |" in report and "| `vae_decoder` |" in report, report
    lines = summary_lines({"error": None, "checks": [{"prompt": "p", "verdict": verdict,
                                                       "reference_verdict": reference}],
                           "where": where, "broken": True, "candidate": {"backend": "onnxruntime"}})
    assert any(line.startswith("WHERE     vae_decoder: overflow in the VAE decoder") for line in lines), lines


# --- Quality ------------------------------------------------------------------------------------------------
def test_quality_gives_back_the_same_dict_and_its_sentence():
    rng = np.random.default_rng(0)
    reference = verdicts.log_softmax(rng.normal(size=(40, 50)))
    candidate = verdicts.log_softmax(np.asarray(reference) + rng.normal(size=(40, 50)) * 0.01)
    one = verdicts.teacher_forced_quality(reference, candidate, rng.integers(0, 50, 40))
    pooled = verdicts.pool_summaries({"output": one, "paragraph": one}) | {
        "sequences": {"output": one, "paragraph": one | {"cached": {"kl_steps": [0.1]}}}, "reused": ["output"],
        "seconds": 1.0}
    for figures in (one, pooled, {"unavailable": "the reference has no logits"}):
        figures = json.loads(json.dumps(figures))
        assert Quality.from_dict(figures).to_dict() == figures
    quality = Quality.from_dict(json.loads(json.dumps(pooled)))
    assert quality.measured and quality.positions == 80 and quality.sequence("paragraph").cached == {"kl_steps": [0.1]}
    assert quality.sentence() == (f"teacher-forced top-1 agreement {quality.top1:.1%}, KL {quality.kl:.3g} nats, "
                                  f"perplexity ×{quality.ppl_ratio:.3f} over 80 positions (the answer's figures kept "
                                  "from an earlier run of the same two models)")
    assert verdicts.quality_sentence(pooled) == quality.sentence()
    assert Quality.from_dict(None).sentence() == "teacher-forced quality not measured"
    assert not Quality.from_dict({"unavailable": "x"}).measured
    assert Quality.from_dict({"unavailable": "x"}).sentence() == "teacher-forced quality not available (x)"
