"""Where did it break: the first divergent unit and its cause, from each unit's output (arena.judging.localize)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arena.judging.localize import SIGNATURES, localize
from tests.export_edits import damage_weight, scale_norm

LAYERS = 6
UNITS = ["model.embed_tokens"] + [u for i in range(LAYERS) for u in
                                  (f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp", f"model.layers.{i}")] + \
    ["model.norm", "lm_head"]


def outputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {u: rng.normal(size=(1, 7, 32)).astype(np.float32) for u in UNITS}


def damaged(reference, at: str, scale: float = 1.0, grow: float = 0.0) -> dict[str, np.ndarray]:
    """The reference with noise from ``at`` on (every later unit carries it), or growing slowly everywhere."""
    rng = np.random.default_rng(1)
    out, hit = {}, False
    for index, unit in enumerate(UNITS):
        hit = hit or unit == at
        noise = scale if hit else grow * (index + 1)
        out[unit] = reference[unit] + noise * rng.normal(size=reference[unit].shape).astype(np.float32)
    return out


@pytest.mark.parametrize("at, unit, signature", [
    ("model.embed_tokens", "model.embed_tokens", "embeddings"),
    ("model.layers.3.self_attn", "model.layers.3", "attention"),
    ("model.layers.0.mlp", "model.layers.0", "mlp"),
    ("model.layers.5", "model.layers.5", "layer"),
    ("model.norm", "model.norm", "norm"),
    ("lm_head", "lm_head", "head"),
])
def test_the_first_divergent_unit_and_its_signature(at, unit, signature):
    reference = outputs()
    where = localize(reference, damaged(reference, at), UNITS, "fp32")
    assert where["unit"] == unit and where["error"] > where["threshold"]
    assert where["cause"] == SIGNATURES[signature].format(unit=unit)
    assert [p["unit"] for p in where["per_unit"]][0] == "model.embed_tokens"
    assert all(p["error"] <= where["threshold"] for p in where["per_unit"][:[p["unit"] for p in
                                                                           where["per_unit"]].index(unit)])


def test_a_good_export_and_reduced_precision_name_no_unit():
    reference = outputs()
    assert localize(reference, damaged(reference, "none", grow=1e-8), UNITS, "fp32") == localize(
        reference, damaged(reference, "none", grow=1e-8), UNITS, "fp32")
    good = localize(reference, damaged(reference, "none", grow=1e-8), UNITS, "fp32")
    assert good["unit"] is None and good["cause"] is None
    fair8 = localize(reference, damaged(reference, "none", grow=0.005), UNITS, "int8")
    assert fair8["unit"] is None and fair8["cause"] == SIGNATURES["precision"]
    # The same growth at fp32 is a break: the fp32 tolerance is tight.
    assert localize(reference, damaged(reference, "none", grow=0.005), UNITS, "fp32")["unit"] is not None


def test_nan_is_a_break_where_it_starts():
    reference = outputs()
    candidate = dict(reference)
    for unit in UNITS[UNITS.index("model.layers.2.self_attn"):]:
        candidate[unit] = np.full_like(reference[unit], np.nan)
    where = localize(reference, candidate, UNITS, "fp16")
    assert where["unit"] == "model.layers.2" and where["error"] is None and where["non_finite"]
    json.dumps(where, allow_nan=False)  # strict JSON: no Infinity


def test_gpt_neox_layout_names_attention_inside_and_the_head_last():
    """GPT-NeoX: the layer's attention child is "attention" (next to a "post_attention_layernorm"), the head
    "embed_out": a broken head is the head, not the embeddings."""
    units = ["gpt_neox.embed_in"] + [u for i in range(3) for u in (
        f"gpt_neox.layers.{i}.attention", f"gpt_neox.layers.{i}.mlp", f"gpt_neox.layers.{i}")] + \
        ["gpt_neox.final_layer_norm", "embed_out"]
    rng = np.random.default_rng(0)
    reference = {u: rng.normal(size=(1, 5, 8)) for u in units}
    broken = dict(reference) | {"embed_out": reference["embed_out"] + 1.0}
    where = localize(reference, broken, units, "fp32")
    assert where["unit"] == "embed_out" and where["cause"] == SIGNATURES["head"]
    after = ("gpt_neox.layers.1.attention", "gpt_neox.layers.1", "gpt_neox.layers.2.attention",
             "gpt_neox.layers.2.mlp", "gpt_neox.layers.2", "gpt_neox.final_layer_norm", "embed_out")
    broken = dict(reference) | {u: reference[u] + 1.0 for u in after}
    where = localize(reference, broken, units, "fp32")
    assert where["unit"] == "gpt_neox.layers.1" and where["cause"] == SIGNATURES["attention"].format(
        unit="gpt_neox.layers.1") and set(where["inside"]) == {"attention", "mlp"}


# --- end to end: exports of a 4-layer Llama broken on purpose, localized against PyTorch ---------------------
@pytest.fixture(scope="module")
def llama4(tmp_path_factory):
    """A 4-layer tiny Llama and its optimum export (fp32)."""
    from backends.conversion.onnx_export import export_text_model
    from tests.tiny_models import build_tiny_llama

    root = tmp_path_factory.mktemp("llama4")
    model = build_tiny_llama(root / "model", layers=4)
    export_text_model(str(model), str(root / "onnx"), "fp32", "cpu")
    return model, root / "onnx"


def broken_copy(export, folder, edit) -> str:
    """A copy of ``export`` with ``edit(model)`` applied to its graph (weights inline: the tiny model is small)."""
    import shutil

    import onnx

    shutil.copytree(export, folder)
    model = onnx.load(str(folder / "model.onnx"))
    edit(model)
    onnx.save(model, str(folder / "model.onnx"))
    return str(folder)


DAMAGES = {  # name: (edit, the unit it must name, the signature)
    "embeddings": (lambda m: damage_weight(m, "model.embed_tokens.weight", noise=0.5), "model.embed_tokens",
                   "embeddings"),
    "first-layer-attention": (lambda m: damage_weight(m, "layers.0/self_attn/q_proj", noise=1.0), "model.layers.0",
                              "attention"),
    "middle-attention": (lambda m: damage_weight(m, "layers.1/self_attn/o_proj", factor=0.5), "model.layers.1",
                         "attention"),
    "middle-mlp": (lambda m: damage_weight(m, "layers.2/mlp/down_proj", factor=0.5), "model.layers.2", "mlp"),
    "final-norm": (lambda m: scale_norm(m, "/model/norm", 1.5), "model.norm", "norm"),
    "output-head": (lambda m: damage_weight(m, "lm_head", noise=0.5), "lm_head", "head"),
}


def where_of(arena, model, onnx_dir: str) -> dict:
    from arena.types import BackendSpec, TextRunRequest

    request = TextRunRequest(model=str(model), prompt="the quick brown fox jumps over the lazy dog",
                             backends=(BackendSpec("pytorch"), BackendSpec("onnxruntime", onnx_dir=onnx_dir)),
                             max_new_tokens=4, prompt_format="plain", warmup=0, localize="all")
    result = arena.run_text_to_end(request)
    assert result.error is None and result.results[1].error is None, (result.error, result.results[1].error)
    metrics = result.results[1].verdict.metrics
    assert "where" in metrics, metrics.get("where_unavailable")
    return metrics["where"]


@pytest.mark.slow
def test_six_broken_exports_are_localized_and_a_good_or_fair_one_names_no_unit(arena, llama4, tmp_path):
    from tests.export_edits import weight_only_int8

    model, export = llama4
    good = where_of(arena, model, str(export))
    assert good["unit"] is None and good["cause"] is None, good
    assert max(p["error"] for p in good["per_unit"]) < 1e-4  # the fp32 export agrees everywhere
    fair = where_of(arena, model, broken_copy(export, tmp_path / "int8", lambda m: weight_only_int8(m, 64)))
    assert fair["unit"] is None, fair
    for name, (edit, unit, signature) in DAMAGES.items():
        where = where_of(arena, model, broken_copy(export, tmp_path / name, edit))
        assert where["unit"] == unit, (name, where)
        assert where["cause"] == SIGNATURES[signature].format(unit=unit), (name, where["cause"])


@pytest.mark.slow
def test_check_localize_on_the_command_line(llama4, session_cache, tmp_path):
    """`python -m arena check --localize --json`: the unit at the top level of the report, the chart's figures
    per unit, and a WHERE line in the summary."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    model, export = llama4
    damaged = broken_copy(export, tmp_path / "mlp", DAMAGES["middle-mlp"][0])
    base = [sys.executable, "-m", "arena", "check", "--model", str(model), "--prompt", "the quick brown fox",
            "--candidate", f"onnxruntime:onnx_dir={damaged}", "--max-new-tokens", "4", "--cache-dir",
            str(session_cache), "--localize"]
    done = subprocess.run([*base, "--json"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    report = json.loads(done.stdout)
    assert report["where"]["unit"] == "model.layers.2", report["where"]
    assert [p["unit"] for p in report["where"]["per_unit"]][:2] == ["model.embed_tokens", "model.layers.0"]
    assert report["where"]["cause"].startswith("the MLP of model.layers.2")
    text = subprocess.run(base, capture_output=True, text=True, cwd=ROOT, timeout=600).stdout
    assert "WHERE     model.layers.2" in text, text
