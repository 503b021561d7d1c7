"""Where did it break, and why: the first module whose output leaves the reference's, and a likely cause.

One forward pass of the prompt (prefill) through the reference and the candidate, with the output of every unit
kept: the embeddings, each decoder layer, the final norm and the output head, in the reference model's module
paths (``model.layers.10``), and inside each layer its attention and its MLP. Each unit's error is the relative
distance ``||candidate - reference|| / ||reference||`` over all positions. At fp32 (the reference's class) the first
unit over the tolerance is where it breaks: the layers before it agree, so the unit itself (not its input) computes
something else. At a reduced precision the error grows through every layer anyway, so a unit over the tolerance
is named only when it also stands out: its error at least `JUMP` times the largest of the `WINDOW` units just
before it, or NaN/Inf. Error that grows evenly past the line names no unit (precision, not a bug).

The cause comes from a short table of signatures (`SIGNATURES`), each held by a test that breaks an export that
way (tests/test_localize.py); a pattern outside the table says "no known signature" rather than guess. Pure
numpy: the core runs this in the UI process.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

# Relative error of one unit's output a precision class may reach without being broken. fp32 exports measure
# ~1e-6; the tolerances leave wide margins. The reduced classes allow the error that grows across layers.
UNIT_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2, "int8": 0.25, "int4": 0.5}
LAYER = re.compile(r"^(?P<list>.+)\.(?P<index>\d+)$")
# A reduced precision's unit over the tolerance breaks only when its error is at least JUMP times the largest error
# of the WINDOW units before it (a layer's attention and MLP: the same role in the WINDOW layers before). Calibrated
# on a real int4 ONNX Runtime run of SmolLM2-135M (tests/test_localize.py, `INT4_SMOLLM2`): its layers step by at
# most 1.27x, except layer 28 at 2.01x (0.124 -> 0.249, in a correct export), so 2 would blame that layer once the
# error crosses the line; the test's MLP broken at 5x its neighbours makes its layer jump 5.6x.
JUMP, WINDOW = 3.0, 3
ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")  # as backends/torch_backend.decoder_units
MLP_NAMES = ("mlp", "feed_forward", "ffn")

# (signature, cause): the table the cause sentence comes from (docs/architecture.md reproduces it).
SIGNATURES = {
    "embeddings": "the embedding table gives other vectors for the same ids: its weights were altered, or the "
                  "export reads another vocabulary (a tokenizer or vocabulary-size mismatch)",
    "attention": "the attention of {unit} computes something else while its input agrees: its projection weights, "
                 "the rotary positions, the mask, or a fused attention kernel",
    "mlp": "the MLP of {unit} computes something else while its attention agrees: its weights or its activation",
    "layer": "{unit}'s attention and MLP agree but its output does not: a norm or a residual connection inside it",
    "norm": "every layer agrees but the final norm does not: its weight or its epsilon",
    "head": "everything up to the final norm agrees but the logits do not: the output projection (lm_head), for "
            "instance embeddings that were tied in the model and not in the export",
    "precision": "no unit stands out: the error grows evenly through the layers, as reduced precision does "
                 "(precision, not a bug)",
}


def unit_error(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """||candidate - reference|| / ||reference|| in float64, or None when the shapes differ."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        return None
    if not np.isfinite(candidate).all():
        return float("inf")
    return float(np.linalg.norm(candidate - reference) / max(np.linalg.norm(reference), 1e-12))


def localize(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], units: list[str],
             precision_class: str) -> dict[str, Any]:
    """The first divergent unit among ``units`` (in forward order; a layer's ``.self_attn`` and ``.mlp`` are
    looked at inside the layer that breaks), its error, the tolerance, every unit's error and the cause.

    ``{"unit": ..., "error": ..., "threshold": ..., "per_unit": [{"unit", "error"}...], "cause": ...}``; the unit
    is None when nothing breaks (then the cause says whether the error just grows, as reduced precision does, and
    ``"over"``: {"unit", "error"} of the largest error when it is over the tolerance without standing out). At a
    reduced precision (any class but fp32) a named unit also has ``"jump"``: its error over the largest of the
    units just before it (None for NaN/Inf or nothing before it)."""
    threshold = UNIT_TOLERANCE.get(precision_class, UNIT_TOLERANCE["fp32"])
    reduced = precision_class in UNIT_TOLERANCE and precision_class != "fp32"
    # A layer's attention and MLP are the units just inside a layer unit ("model.layers.3.self_attn").
    main = [u for u in units if _parent_layer(u, units) is None]
    errors: dict[str, float] = {}
    for unit in units:
        if unit in reference and unit in candidate:
            value = unit_error(reference[unit], candidate[unit])
            if value is not None:
                errors[unit] = value
    compared = [u for u in main if u in errors]
    per_unit = [{"unit": u, "error": _round(errors[u])} for u in compared]

    def breaks(index: int) -> bool:
        error = errors[compared[index]]
        return error > threshold and (not reduced or stands_out(error, [errors[u] for u in compared[:index]]))

    first = next((compared[i] for i in range(len(compared)) if breaks(i)), None)
    where: dict[str, Any] = {"unit": first, "error": _round(errors[first]) if first else None,
                             "threshold": threshold, "per_unit": per_unit, "cause": None}
    if first is not None and errors[first] == float("inf"):
        where["non_finite"] = True  # NaN or Inf from here on (JSON has no infinity: the error is None)
    if first is None:
        layer_errors = [errors[u] for u in compared if LAYER.match(u)]
        grows = len(layer_errors) >= 3 and layer_errors[-1] > 2 * max(layer_errors[0], 1e-9) \
            and layer_errors[-1] > threshold / 20
        largest = max(compared, key=lambda u: errors[u], default=None)
        if largest is not None and errors[largest] > threshold:  # over the line, yet standing out nowhere
            where["over"] = {"unit": largest, "error": _round(errors[largest])}
        where["cause"] = SIGNATURES["precision"] if reduced and (grows or "over" in where) else None
        return where
    if reduced:
        before = [errors[u] for u in compared[:compared.index(first)][-WINDOW:]]
        where["jump"] = _round(errors[first] / max(before)) if before and max(before) > 0 else None
    # Only a decoder layer has an attention and an MLP inside it (never the head, the embeddings or the norm).
    inside = {_role(u): _round(errors[u]) for u in units if _layer_of(u, units) == first and u in errors}
    if inside:
        where["inside"] = inside
    where["cause"] = cause(first, main, units, errors, threshold, reduced)
    return where


def stands_out(error: float, before: list[float]) -> bool:
    """A reduced precision's unit error is a break, not noise: NaN/Inf, or at least `JUMP` times the largest of
    the `WINDOW` errors just before it (any error when nothing comes before)."""
    before = [e for e in before[-WINDOW:] if np.isfinite(e)]
    return error == float("inf") or not before or error >= JUMP * max(before)


def _parent_layer(unit: str, units: list[str]) -> str | None:
    """The compared decoder layer ``unit`` is just inside ("model.layers.3.self_attn" -> "model.layers.3"), or None
    for a unit that is not inside one (the embeddings, a layer, the final norm, the head)."""
    parent = unit.rpartition(".")[0]
    return parent if parent in units and LAYER.match(parent) else None


def _layer_of(unit: str, units: list[str]) -> str | None:
    """The decoder layer ``unit`` is the attention or MLP of, or None: only a layer has them, and only by the names
    `_role` knows."""
    return _parent_layer(unit, units) if _role(unit) is not None else None


def _role(unit: str) -> str | None:
    """"attention" or "mlp": what a unit inside a decoder layer is, by its module name; None for anything else (a
    sub-unit a unit does not have is never named)."""
    name = unit.rsplit(".", 1)[-1]
    return "mlp" if name in MLP_NAMES else "attention" if name in ATTENTION_NAMES else None


def _inside(first: str, units: list[str], errors: dict[str, float], role: str) -> float | None:
    return next((errors[u] for u in units if _layer_of(u, units) == first and _role(u) == role and u in errors),
                None)


def cause(first: str, main: list[str], units: list[str], errors: dict[str, float], threshold: float,
          reduced: bool = False) -> str:
    """The signature sentence for a break at ``first``, or "no known signature" (never a guess). At a reduced
    precision the attention or MLP inside a layer is the cause when it stands out against the same role in the
    layers before (`stands_out`), not when it is merely over the tolerance."""
    position = main.index(first)
    if LAYER.match(first):
        attention, mlp = _inside(first, units, errors, "attention"), _inside(first, units, errors, "mlp")
        if attention is None or mlp is None:
            return f"no known signature: {first} breaks, and its attention and MLP outputs were not compared"

        def differs(role: str, error: float) -> bool:
            if not reduced:
                return error > threshold
            earlier = [e for e in (_inside(u, units, errors, role) for u in main[:position] if LAYER.match(u))
                       if e is not None]
            return stands_out(error, earlier) if earlier else error > threshold

        if differs("attention", attention):
            return SIGNATURES["attention"].format(unit=first)
        return SIGNATURES["mlp" if differs("mlp", mlp) else "layer"].format(unit=first)
    if position == len(main) - 1 and position > 0:  # the last unit: the output head
        return SIGNATURES["head"]
    if position == 0:
        return SIGNATURES["embeddings"]
    if first.rsplit(".", 1)[-1].endswith(("norm", "ln_f", "final_layernorm")):
        return SIGNATURES["norm"]
    return "no known signature" + (" (the error stays after it)" if position < len(main) - 1 else "")


def _round(value: float) -> float | None:
    """Three significant digits; None for NaN or Inf (strict JSON has neither)."""
    return float(f"{value:.3g}") if np.isfinite(value) else None
