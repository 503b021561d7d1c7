"""Headless judgement: is a candidate (for example a user's ONNX export) broken? Used by the CLI, the API and MCP.

The candidate runs next to the reference (by default the registry's `default_reference`: PyTorch fp32) on a few
prompts; every run is judged
(`arena.judging.verdicts`) and the candidate is broken when any of its verdicts says so. What a check takes is a
`CheckRequest`, declared once like the text and image requests (`arena.fields.request_field`): the CLI's flags
(``python -m arena check``), the ``/check`` API's signature and docstring, and so MCP's tool, are read from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from arena.fields import RequestFields, request_field
from arena.judging.results import Where, error_text
from arena.judging.verdicts import REACH_CACHED_STEPS, TOLERANCE_OVERRIDES, tolerance_overrides
from arena.preparing.catalog import IMAGE_CATALOG, find_image_catalog_model
from arena.registry import default_reference
from arena.tasks import TEXT_CHECK_PROMPTS, task_of
from arena.types import PROMPT_CAP, BackendSpec, ImageRunRequest, TextRunRequest

# The long reach a check teacher-forces by default (`TextRunRequest.reach`): 4,096 positions, or the model's
# context when shorter.
CHECK_REACH = 4096
TEXT_PROMPTS = TEXT_CHECK_PROMPTS  # the prompts a text check runs when given none (`arena.tasks`)
TASKS = ("auto", "text", "image")
TOLERANCE_HELP = ("{what}, in place of the per-precision table's, as Polygraphy's comparator takes --atol: one value "
                  "for every precision class ({example}), or PRECISION:VALUE for one class, several separated by "
                  "commas (fp16:{example},int8:1); empty: the table's")


def _model(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("The model is a catalog key, a hub id or a local folder: a non-empty text.")
    return value


def _candidate(value: Any) -> BackendSpec:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError('The candidate is a backend name or options dict, e.g. {"backend": "onnxruntime", '
                         '"onnx_dir": "/exports/x"}.')
    return BackendSpec.from_any(value)


def _tolerance(value: Any) -> str:
    """A tolerance as given (checked by `tolerance_overrides` when the check starts), bounded: its value is echoed in
    the sentence that refuses it."""
    text = "" if value is None else str(value)
    if len(text) > 200:
        raise ValueError("A tolerance is a number, or PRECISION:VALUE pairs separated by commas: at most 200 "
                         "characters.")
    return text


def _reference() -> BackendSpec:
    return BackendSpec(default_reference())


@dataclass(frozen=True)
class CheckRequest(RequestFields):
    """One check: is ``candidate`` broken, next to ``reference``, on a few prompts? Each field is declared once
    (`arena.fields.request_field`), as the text and image requests' are: the CLI, the API, MCP and the public gate
    read it from here. Public mode: the prompts are capped in number and length, the tokens and steps by their
    caps; the long reach is cut to its cap, not refused (`check`); paths and the model are the runs' gate's."""

    what: ClassVar[str] = "check"

    model: str = request_field(None, kind="text", label="Model", required=True, parser=_model,
                               help="the reference model: a catalog key, hub id or local directory")
    candidate: BackendSpec = request_field(
        None, kind="backend", label="Candidate", required=True, parser=_candidate,
        help='the backend to judge: a name or an options dict, e.g. {"backend": "onnxruntime", "onnx_dir": '
             '"/exports/x"} (CLI: onnxruntime:onnx_dir=/exports/x)')
    task: str = request_field("auto", kind="text", label="Task", choices=TASKS,
                              help='"auto" (an image catalog key or a diffusers pipeline folder is "image"), "text" '
                                   'or "image"')
    prompts: tuple[str, ...] = request_field(
        (), kind="texts", label="Prompts", cli_flag="--prompt", public_cap="max_check_prompts",
        cap_text="A check takes up to {cap} prompts on this public server (asked: {asked}).",
        help="the prompts to check with; default: three built-in ones (images: three example prompts)")
    reference: BackendSpec = request_field(
        kind="backend", label="Reference", default_factory=_reference, parser=BackendSpec.from_any,
        help="the backend the candidate is compared with, as the candidate is given; default: the first backend "
             "that can be a reference in its default configuration (PyTorch fp32)")
    max_new_tokens: int = request_field(48, kind="int", label="Max new tokens", minimum=1, maximum=4096,
                                        public_cap="max_new_tokens", help="text checks: tokens per answer")
    reach: int = request_field(CHECK_REACH, kind="int", label="Long reach (positions)", minimum=0, maximum=131_072,
                               help="text checks: teacher-force the long shipped text up to this many positions (cut "
                                    "to the model's context, and to the cap on a public server; 0 or up to 512: the "
                                    "fixed paragraph only), a full pass and its last positions through the "
                                    "candidate's KV cache")
    steps: int | None = request_field(None, kind="int", label="Steps", minimum=1, maximum=200,
                                      public_cap="max_steps",
                                      cap_text="Steps are capped at {cap} on this public server (asked: {asked}).",
                                      help="image checks: denoising steps (not given: the catalog entry's, else 20)")
    seed: int = request_field(0, kind="int", label="Seed", minimum=0, maximum=2**63 - 1,
                              help="image checks: the seed of the initial latents")
    localize: str = request_field("auto", kind="text", label="Where did it break?", choices=("auto", "all", "off"),
                                  flag_alone="all",
                                  help="compare each layer's output (text) or each component's, text encoder / "
                                       'UNet / VAE decoder (images), with the reference\'s: "auto" for a broken or '
                                       'drifting candidate, "all" for any candidate (the CLI\'s bare --localize), '
                                       '"off" for none; a check localizes its first such prompt only')
    atol: str = request_field("", kind="text", parser=_tolerance, label="Logits abs. tolerance (atol)",
                              help=TOLERANCE_HELP.format(what="text checks: the first-step logits' absolute "
                                                              "tolerance", example="0.5"))
    rtol: str = request_field("", kind="text", parser=_tolerance, label="Logits rel. tolerance (rtol)",
                              help=TOLERANCE_HELP.format(what="text checks: their relative tolerance",
                                                         example="0.02"))
    min_psnr: str = request_field("", kind="text", parser=_tolerance, label="Minimum PSNR (dB)",
                                  help=TOLERANCE_HELP.format(what="image checks: the least PSNR against the "
                                                                  "reference", example="30"))
    min_ssim: str = request_field("", kind="text", parser=_tolerance, label="Minimum SSIM",
                                  help=TOLERANCE_HELP.format(what="image checks: the least SSIM", example="0.9"))

    def tolerances(self) -> dict[str, dict[str, str]]:
        """The tolerances given, as `arena.judging.verdicts.tolerance_overrides` reads them: {name: {precision class
        or "" (every other class): value}}; checked there (`_tolerance_problem`)."""
        found: dict[str, dict[str, str]] = {}
        for name in TOLERANCE_OVERRIDES:
            for part in filter(None, (piece.strip() for piece in str(getattr(self, name) or "").split(","))):
                klass, _, value = part.rpartition(":")
                found.setdefault(name, {})[klass.strip()] = value.strip()
        return found

    def refuse_public(self, limits: Any) -> str | None:
        """The fields' caps (the number of prompts first), and each prompt's length under the prompt's cap."""
        problem = self.field("prompts").refuse_public(self.prompts, limits)
        if problem:
            return problem
        longest = max((len(p) for p in self.prompts), default=0)
        if longest > limits.max_prompt_chars:
            return PROMPT_CAP.format(cap=f"{limits.max_prompt_chars:g}", asked=f"{longest:g}")
        return super().refuse_public(limits)

    def resolved_task(self, look_on_disk: bool = True) -> str:
        """"text" or "image": the task asked for, or guessed from the model (`guess_task`)."""
        return guess_task(self.model, look_on_disk) if self.task == "auto" else self.task

    def prompt_list(self, task: str) -> tuple[str, ...]:
        """The prompts asked for, or the built-in ones for ``task``."""
        return self.prompts or task_of(task).check_prompts


def guess_task(model: str, look_on_disk: bool = True) -> str:
    """"image" for an image catalog key or a diffusers pipeline folder (or export), else "text"."""
    if find_image_catalog_model(model) is not None:
        return "image"
    if not look_on_disk:  # public mode: a visitor's string never opens a server path
        return "text"
    return "image" if (Path(model).expanduser() / "model_index.json").is_file() else "text"


def check(arena, request: CheckRequest | str, candidate: Any = None, progress=lambda *_: None, cancel=None,
          **fields: Any) -> dict[str, Any]:
    """Run reference and candidate on each prompt and collect the verdicts.

    ``request``: a `CheckRequest`. (Or, as before it existed, the model, the candidate and the fields as keyword
    arguments, ``localize`` a bool for "all" or "auto": ``check(arena, model, spec, prompts=..., localize=True)``.)

    Returns {"broken": bool, "error": str | None, "task", "model", "candidate", "reference", "checks": [{prompt,
    candidate verdict, reference verdict, ...}], "where": ...}. ``error`` is a problem before any verdict (no
    such model, a value out of its bounds, a public cap). ``where``: the first localized prompt's
    `arena.judging.localize` result (text: the first divergent layer) or `arena.judging.localize_image` result
    (images: the first divergent component), as the request's ``localize`` asks; None with ``where_unavailable``
    when it could not be done, or when nothing was localized. The long reach is teacher-forced once, with the first
    prompt (the text does not depend on the prompt); ``reach`` in the report says how far it went.

    The request's ``atol``/``rtol`` (text: the first-step logits) and ``min_psnr``/``min_ssim`` (images) judge in
    place of the per-precision tables, as Polygraphy's comparator takes ``--atol``/``--rtol``
    (`CheckRequest.tolerances`); each verdict's reason then says "the given tolerance", and the report repeats
    them as ``tolerances``.
    """
    if not isinstance(request, CheckRequest):
        if isinstance(fields.get("localize"), bool):
            fields["localize"] = "all" if fields["localize"] else "auto"
        request = CheckRequest.from_values({"model": request, "candidate": candidate, **fields})
    task = task_of(request.resolved_task(look_on_disk=not arena.policy.public))
    reference, candidate = request.reference, request.candidate
    prompts = request.prompt_list(task)
    out: dict[str, Any] = {"task": task.name, "model": request.model, "candidate": candidate.to_dict(),
                           "reference": reference.to_dict(), "checks": [], "error": None}
    tolerances = request.tolerances()
    if tolerances:
        out["tolerances"] = tolerances
    problem = arena.policy.refuse_check(request) or request.refuse_bounds() or _tolerance_problem(tolerances, task.name)
    if problem:
        out.update(error=problem, broken=True)
        return out
    reach, cut = request.reach, ""
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
        # once localized, not again: the first prompt that breaks says where
        localize = "off" if located else request.localize
        run = _RUNS[task.name](request, prompt, localize=localize, reach=0 if out["checks"] else reach)
        result = task.step(arena, "run_{}_to_end")(run, progress, cancel, tolerances=tolerances)
        if result.error:
            out["error"] = result.error
            break
        ref, cand = result.results
        located = located or "where" in cand.verdict.metrics
        if task.streams_text and not out["checks"]:  # the long reach: teacher-forced with the first prompt
            model_info = result.to_dict().get("model") or {}
            out["reach"] = {"asked": reach, "positions": model_info.get("reach_positions", 0),
                            "note": "; ".join(n for n in (cut, model_info.get("reach_note", "")) if n)}
        out["checks"].append({
            "prompt": prompt,
            "verdict": cand.verdict.to_dict(),
            "reference_verdict": ref.verdict.to_dict(),
            # Where a sequence-dependent difference starts (teacher-forced positions), or None.
            "onset_position": (cand.verdict.metrics.get("onset") or {}).get("position") if task.streams_text
            else None,
            "output": cand.text if task.streams_text else None,
            "reference_output": ref.text if task.streams_text else None,
        })
    out["broken"] = out["error"] is not None or any(c["verdict"]["broken"] for c in out["checks"])
    localized = next((c["verdict"]["metrics"] for c in out["checks"] if "where" in c["verdict"]["metrics"]), None)
    out["where"] = localized["where"] if localized else None
    if localized and localized["where"] is None:
        out["where_unavailable"] = localized.get("where_unavailable")
    return out


def _text_run(request: CheckRequest, prompt: str, localize: str, reach: int) -> TextRunRequest:
    return TextRunRequest(model=request.model, prompt=prompt, backends=(request.reference, request.candidate),
                          max_new_tokens=request.max_new_tokens, warmup=0, reference="0", reach=reach,
                          localize=localize)


def _image_run(request: CheckRequest, prompt: str, localize: str, reach: int) -> ImageRunRequest:
    entry = find_image_catalog_model(request.model) or IMAGE_CATALOG[0]  # a local pipeline: the embedded one's
    return ImageRunRequest(model=request.model, prompt=prompt, backends=(request.reference, request.candidate),
                           steps=request.steps or entry.steps, guidance_scale=entry.guidance_scale,
                           seed=request.seed, reference="0", localize=localize)


# One prompt's run of a check, by task (`arena.tasks`): the reference first, the candidate second.
_RUNS = {"text": _text_run, "image": _image_run}


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
