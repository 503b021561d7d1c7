"""Where did it break, and why: the first module whose output leaves the reference's, and a likely cause.

One forward pass of the prompt (prefill) through the reference and the candidate, with the output of every unit
kept: the embeddings, each decoder layer, the final norm and the output head, in the reference model's module
paths (``model.layers.10``), and inside each layer its attention and its MLP. Each unit's error is the relative
distance ``||candidate - reference|| / ||reference||`` over all positions. The first unit over the tolerance of
the candidate's precision class is where it breaks: the layers before it agree, so the unit itself (not its
input) computes something else.

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
    "precision": "no unit breaks: the error grows a little through every layer, as a reduced precision does "
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
    is None when nothing breaks (then the cause says whether the error just grows, as reduced precision does)."""
    threshold = UNIT_TOLERANCE.get(precision_class, UNIT_TOLERANCE["fp32"])
    # A layer's attention and MLP are the units just inside a layer unit ("model.layers.3.self_attn").
    main = [u for u in units if not (LAYER.match(u.rsplit(".", 1)[0]) and u.rsplit(".", 1)[0] in units)]
    errors: dict[str, float] = {}
    for unit in units:
        if unit in reference and unit in candidate:
            value = unit_error(reference[unit], candidate[unit])
            if value is not None:
                errors[unit] = value
    per_unit = [{"unit": u, "error": _round(errors[u])} for u in main if u in errors]
    first = next((u for u in main if errors.get(u, 0.0) > threshold), None)
    where: dict[str, Any] = {"unit": first, "error": _round(errors[first]) if first else None,
                             "threshold": threshold, "per_unit": per_unit, "cause": None}
    if first is not None and errors[first] == float("inf"):
        where["non_finite"] = True  # NaN or Inf from here on (JSON has no infinity: the error is None)
    if first is None:
        layer_errors = [errors[u] for u in main if u in errors and LAYER.match(u)]
        grows = len(layer_errors) >= 3 and layer_errors[-1] > 2 * max(layer_errors[0], 1e-9) \
            and layer_errors[-1] > threshold / 20
        where["cause"] = SIGNATURES["precision"] if grows and precision_class != "fp32" else None
        return where
    inside = {_role(u): _round(errors[u]) for u in units if u.rsplit(".", 1)[0] == first and u in errors}
    if inside:
        where["inside"] = inside
    where["cause"] = cause(first, main, units, errors, threshold)
    return where


def _role(unit: str) -> str:
    """"attention" or "mlp": what a unit inside a decoder layer is, by its module name."""
    return "mlp" if unit.rsplit(".", 1)[-1] in ("mlp", "feed_forward", "ffn") else "attention"


def _inside(first: str, units: list[str], errors: dict[str, float], role: str) -> float | None:
    return next((errors[u] for u in units if u.rsplit(".", 1)[0] == first and _role(u) == role and u in errors),
                None)


def cause(first: str, main: list[str], units: list[str], errors: dict[str, float], threshold: float) -> str:
    """The signature sentence for a break at ``first``, or "no known signature" (never a guess)."""
    position = main.index(first)
    if LAYER.match(first):
        attention, mlp = _inside(first, units, errors, "attention"), _inside(first, units, errors, "mlp")
        if attention is None or mlp is None:
            return f"no known signature: {first} breaks, and its attention and MLP outputs were not compared"
        if attention > threshold:
            return SIGNATURES["attention"].format(unit=first)
        return SIGNATURES["mlp" if mlp > threshold else "layer"].format(unit=first)
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
