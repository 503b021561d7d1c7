"""Where did it break: the first divergent unit and its cause, from each unit's output (arena.judging.localize)."""

from __future__ import annotations

import numpy as np
import pytest

from arena.judging.localize import SIGNATURES, localize

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
    assert where["unit"] == "model.layers.2" and where["error"] == float("inf")
