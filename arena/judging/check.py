"""Headless judgement: is a candidate (for example a user's ONNX export) broken? Used by the CLI and the API.

The candidate runs next to the reference (by default the registry's `default_reference`: PyTorch fp32) on a few
prompts; every run is judged
(`arena.judging.verdicts`) and the candidate is broken when any of its verdicts says so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from arena.judging.results import Where, error_text
from arena.judging.verdicts import REACH_CACHED_STEPS, TOLERANCE_OVERRIDES, tolerance_overrides
from arena.preparing.catalog import IMAGE_CATALOG, IMAGE_EXAMPLE_PROMPTS, find_image_catalog_model
from arena.registry import default_reference
from arena.types import BackendSpec, ImageRunRequest, TextRunRequest

# The long reach a check teacher-forces by default (`TextRunRequest.reach`): 4,096 positions, or the model's
# context when shorter.
CHECK_REACH = 4096
TEXT_PROMPTS = (
    "Why should one run machine learning models on-premises?",
    "Write a short poem about the sea.",
    "Explain what a neural network is to a child.",
)


def guess_task(model: str, look_on_disk: bool = True) -> str:
    """"image" for an image catalog key or a diffusers pipeline folder (or export), else "text"."""
    if find_image_catalog_model(model) is not None:
        return "image"
    if not look_on_disk:  # public mode: a visitor's string never opens a server path
        return "text"
    return "image" if (Path(model).expanduser() / "model_index.json").is_file() else "text"


def check(arena, model: str, candidate: BackendSpec, task: str = "auto", prompts: tuple[str, ...] = (),
          reference: BackendSpec | None = None, max_new_tokens: int = 48, steps: int | None = None,
          seed: int = 0, progress=lambda *_: None, cancel=None, localize: bool = False,
          reach: int = CHECK_REACH, tolerances: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run reference and candidate on each prompt and collect the verdicts.

    Returns {"broken": bool, "error": str | None, "task", "model", "candidate", "reference", "checks": [{prompt,
    candidate verdict, reference verdict, ...}], "where": ...}. ``error`` is a problem before any verdict (no
    such model). ``where``: the first localized prompt's `arena.judging.localize` result (text: the first
    divergent layer) or `arena.judging.localize_image` result (images: the first divergent component); a broken or
    drifting candidate is localized, ``localize`` asks it for any candidate; None with ``where_unavailable``
    when it could not be done, or when nothing was localized. ``reach``: the long reach's positions (text; cut to
    the model's context), teacher-forced once, with the first prompt (the text does not depend on the prompt);
    ``reach`` in the report says how far it went. ``tolerances``: judged with these in place of the per-precision
    tables, as Polygraphy's comparator takes ``--atol``/``--rtol``: {"atol": 0.5} for every precision class, or
    {"atol": {"fp16": 0.5, "": 0.1}} per class ("" the others); text ``atol``/``rtol`` (the first-step logits),
    images ``min_psnr``/``min_ssim`` (`arena.judging.verdicts.TOLERANCE_OVERRIDES`); each verdict's reason then
    says "the given tolerance", and the report repeats them as ``tolerances``.
    """
    task = guess_task(model, look_on_disk=not arena.policy.public) if task == "auto" else task
    reference = reference or BackendSpec(default_reference())
    prompts = tuple(prompts) or (IMAGE_EXAMPLE_PROMPTS[:3] if task == "image" else TEXT_PROMPTS)
    out: dict[str, Any] = {"task": task, "model": model, "candidate": candidate.to_dict(),
                           "reference": reference.to_dict(), "checks": [], "error": None}
    if tolerances:
        out["tolerances"] = tolerances
    problem = arena.policy.refuse_check(prompts) or _tolerance_problem(tolerances, task)
    if problem:
        out.update(error=problem, broken=True)
        return out
    cut = ""
    if arena.policy.public and reach > arena.policy.limits.max_reach:  # the default included: cut, not refused
        cut = f"the long reach is cut to {arena.policy.limits.max_reach:,} positions on this public server"
        reach = arena.policy.limits.max_reach
    # Public mode: one clock for the whole check too, not a full time limit per prompt.
    deadline = time.monotonic() + arena.policy.limits.run_time_limit_s if arena.policy.public else None
    located = False
    for prompt in prompts:
        if deadline is not None and time.monotonic() > deadline:
            out["error"] = (f"This check reached the server's time limit of "
                            f"{arena.policy.limits.run_time_limit_s:g} s after {len(out['checks'])} prompt(s).")
            break
        if task == "image":
            entry = find_image_catalog_model(model) or IMAGE_CATALOG[0]
            request = ImageRunRequest(model=model, prompt=prompt, backends=(reference, candidate),
                                      steps=steps or entry.steps, guidance_scale=entry.guidance_scale, seed=seed,
                                      reference="0", localize="off" if located else "all" if localize else "auto")
            result = arena.run_image_to_end(request, progress, cancel, tolerances=tolerances)
        else:
            request = TextRunRequest(model=model, prompt=prompt, backends=(reference, candidate),
                                     max_new_tokens=max_new_tokens, warmup=0, reference="0",
                                     reach=0 if out["checks"] else reach,
                                     # once localized, not again: the first prompt that breaks says where
                                     localize="off" if located else "all" if localize else "auto")
            result = arena.run_text_to_end(request, progress, cancel, tolerances=tolerances)
        if result.error:
            out["error"] = result.error
            break
        ref, cand = result.results
        located = located or "where" in cand.verdict.metrics
        if task == "text" and not out["checks"]:
            model_info = result.to_dict().get("model") or {}
            out["reach"] = {"asked": reach, "positions": model_info.get("reach_positions", 0),
                            "note": "; ".join(n for n in (cut, model_info.get("reach_note", "")) if n)}
        out["checks"].append({
            "prompt": prompt,
            "verdict": cand.verdict.to_dict(),
            "reference_verdict": ref.verdict.to_dict(),
            # Where a sequence-dependent difference starts (teacher-forced positions), or None.
            "onset_position": (cand.verdict.metrics.get("onset") or {}).get("position") if task == "text" else None,
            "output": cand.text if task == "text" else None,
            "reference_output": ref.text if task == "text" else None,
        })
    out["broken"] = out["error"] is not None or any(c["verdict"]["broken"] for c in out["checks"])
    localized = next((c["verdict"]["metrics"] for c in out["checks"] if "where" in c["verdict"]["metrics"]), None)
    out["where"] = localized["where"] if localized else None
    if localized and localized["where"] is None:
        out["where_unavailable"] = localized.get("where_unavailable")
    return out


def _tolerance_problem(tolerances: dict[str, Any] | None, task: str) -> str | None:
    """Why ``tolerances`` cannot judge a ``task`` check (`tolerance_overrides`' checks, and a name of the other
    task's), or None."""
    try:
        tolerance_overrides(tolerances)
    except ValueError as exc:
        return f"Tolerances: {exc}."
    other = [name for name in tolerances or {} if TOLERANCE_OVERRIDES[name][0] != task]
    if other:
        return (f"Tolerances: {', '.join(other)} judge{'s' if len(other) == 1 else ''} "
                f"{TOLERANCE_OVERRIDES[other[0]][0]} checks, not this {task} check.")
    return None


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per prompt: the candidate's verdict and reason (and the reference's, when it is broken)."""
    if report["error"]:
        return [f"ERROR {report['error']}"]
    lines = []
    reach = report.get("reach") or {}
    if reach.get("positions"):
        lines.append(f"{'REACH':<9} {reach['positions']:,} positions teacher-forced (a full pass, and the last "
                     f"{REACH_CACHED_STEPS} through the candidate's KV cache)"
                     + (f"; {reach['note']}" if reach.get("note") else ""))
    elif reach.get("asked"):
        lines.append(f"{'REACH':<9} the fixed 512-position paragraph only" + (f": {reach['note']}"
                                                                              if reach.get("note") else ""))
    for check_ in report["checks"]:
        verdict, ref = check_["verdict"], check_["reference_verdict"]
        lines.append(f"{verdict['kind']:<9} {check_['prompt'][:48]!r}: {verdict['reason']}")
        if ref["broken"]:
            lines.append(f"{'':<9} (the reference itself is {ref['kind']}: {ref['reason']})")
    where = Where.from_dict(report["where"]) if report.get("where") else None
    if where and where.is_image:
        found = f"{where.unit}{where.at_step()}: {where.cause}" if where.unit else \
            "no component breaks" + (f": {where.cause}" if where.cause else "")
        lines.append(f"{'WHERE':<9} {found} [{where.figures()}]")
    elif where and where.is_kv_cache:
        lines.append(f"{'WHERE':<9} the KV cache: {where.cause}")
    elif where and where.unit:
        lines.append(f"{'WHERE':<9} {where.unit} (relative error {error_text(where.error)}"
                     + (f", {where.jump:g}x the units just before it" if where.jump else "")
                     + f", tolerance {where.threshold:g}): {where.cause}")
    elif where:
        over = where.over  # a reduced precision's even growth past the line
        lines.append(f"{'WHERE':<9} no layer breaks ("
                     + (f"{over['unit']} reaches {over['error']:.3g}, over the tolerance {where.threshold:g}"
                        if over else f"every unit within the tolerance {where.threshold:g}") + ")"
                     + (f"; {where.cause}" if where.cause else ""))
    elif report.get("where_unavailable"):
        lines.append(f"{'WHERE':<9} not localized: {report['where_unavailable']}")
    lines.append(("BROKEN: " if report["broken"] else "OK: ") + BackendSpec.from_any(report["candidate"]).label)
    return lines
