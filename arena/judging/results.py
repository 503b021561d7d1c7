"""The judging's results as types: `Where` (where a candidate breaks: `arena.judging.localize` for text,
`arena.judging.localize_image` for images) and `Quality` (teacher-forced figures against the reference,
`arena.judging.verdicts.teacher_forced_quality`).

Results travel as dicts (to the UI process, to JSON reports, to History, to the API): a verdict's
``metrics["where"]`` and ``metrics["quality"]`` keep the shape they always had, and every reader takes them through
``Where.from_dict`` / ``Quality.from_dict`` at its border, then reads the type: the panel's "Where?" line and its
quality rows (ui/format.py), the charts (ui/charts.py), the Markdown report (arena/sharing/reports.py) and
``python -m arena check``'s lines (arena/judging/check.py). Each has one ``to_dict()`` (the same dict back) and one
``sentence()``. Pure standard library: the UI process imports it (``from arena import Where, Quality``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# The image pipeline's components as sentences name them (`arena.judging.localize_image.COMPONENTS`).
COMPONENT_TITLES = {"text_encoder": "text encoder", "unet": "UNet", "vae_decoder": "VAE decoder"}
KV_CACHE = "the KV cache"  # the "unit" of a text candidate whose full pass agrees and cached decode does not


def error_text(error: float | None) -> str:
    """A relative error, or NaN/Inf (stored as None: JSON has no infinity)."""
    return "NaN/Inf" if error is None else f"{error:.3g}"


def component_broken(entry: dict[str, Any], threshold: float) -> bool:
    """An image component's figures are a break: it failed, changed shape, gave NaN/Inf or is over ``threshold``."""
    return bool("failed" in entry or "shape_mismatch" in entry or entry.get("non_finite")
                or entry["error"] is None or entry["error"] > threshold)


def at_step(where: dict[str, Any]) -> str:
    """" at denoising step k of N (timestep t)" for an image result or UNet entry with a step, else ""."""
    if where.get("step") is None or where.get("steps") is None:
        return ""
    return f" at denoising step {where['step']} of {where['steps']} (timestep {where['timestep']:g})"


def component_summary(where: dict[str, Any], default_threshold: float = 1e-3) -> str:  # fp32's UNIT_TOLERANCE
    """One line of figures per image component ("text encoder 2.5e-07 · UNet 0.31 at step 14 of 20 (max |Δ| 1.2) ·
    VAE decoder 8 NaN/Inf values"), for the "Where?" line and the report."""
    parts = []
    for entry in where.get("per_unit") or ():
        name = COMPONENT_TITLES.get(entry["unit"], entry["unit"])
        if "failed" in entry:
            parts.append(f"{name} failed")
            continue
        over = entry.get("per_step") and component_broken(entry, where.get("threshold", default_threshold))
        step = f" at step {entry['step']} of {entry['steps']}" if over else ""
        if entry.get("non_finite"):
            parts.append(f"{name} {entry['non_finite']} NaN/Inf values{step}")
            continue
        text = (f"{name} {entry['error']:.3g}" if entry.get("error") is not None else f"{name} –") + step
        extra = [f"max |Δ| {entry['max_abs']:.3g}"] if entry.get("max_abs") is not None else []
        if entry.get("per_step") and not over:  # the largest of its steps, all within tolerance
            kept = len(entry["per_step"])
            extra.insert(0, f"largest of {kept} steps" + (f" of {entry['steps']}" if kept < entry["steps"] else ""))
        if entry.get("psnr_db") is not None:
            extra.append(f"PSNR {entry['psnr_db']:g} dB")
        parts.append(text + (f" ({', '.join(extra)})" if extra else ""))
    return " · ".join(parts)


def _split(cls, data: dict[str, Any], renamed: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` as (the type's fields, the rest): an optional field written as None stays in the rest, as written,
    so ``to_dict`` gives back the same keys."""
    names = {f.name for f in fields(cls)} - {"extra"}
    typed: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in data.items():
        name = renamed.get(key, key)
        if name in names and value is not None:
            typed[name] = value
        else:
            rest[key] = value
    return typed, rest


@dataclass(frozen=True)
class Where:
    """Where a candidate breaks: the first unit (text: a module path; images: a pipeline component) whose output
    leaves the reference's on the same input, its relative error, the tolerance, every unit's figures and the likely
    cause; ``unit`` None when none breaks."""

    unit: str | None = None
    error: float | None = None  # relative error; None for NaN/Inf (or the KV cache)
    threshold: float = 0.0
    per_unit: tuple[dict[str, Any], ...] = ()
    cause: str | None = None
    task: str | None = None  # "image" for a pipeline's components; absent (None) for text
    step: int | None = None  # images: the UNet's denoising step where it breaks (1-based), of ``steps``
    timestep: float | None = None
    steps: int | None = None
    non_finite: bool | None = None  # NaN or Inf from ``unit`` on
    over: dict[str, Any] | None = None  # text, nothing named: {"unit", "error"} of the largest error over the line
    jump: float | None = None  # text, reduced precision: the unit's error over the largest just before it
    inside: dict[str, Any] | None = None  # text: a layer's {"attention": error, "mlp": error}
    start: dict[str, Any] | None = None  # text, a late onset: {"sequence", "position"} compared from (key "from")
    extra: dict[str, Any] = field(default_factory=dict)  # keys this type does not read, kept as written

    _RENAMED = {"from": "start"}  # a key that is a keyword in Python

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Where:
        typed, rest = _split(cls, data, cls._RENAMED)
        for key in ("unit", "error", "cause"):  # always written, None included
            if key in rest and rest[key] is None:
                del rest[key]
        if "per_unit" in typed:
            typed["per_unit"] = tuple(typed["per_unit"])
        return cls(**typed, extra=rest)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"unit": self.unit, "error": self.error, "threshold": self.threshold,
                               "per_unit": list(self.per_unit), "cause": self.cause}
        for name in ("task", "step", "timestep", "steps", "non_finite", "over", "jump", "inside", "start"):
            value = getattr(self, name)
            if value is not None:
                out["from" if name == "start" else name] = value
        return out | self.extra

    @property
    def is_image(self) -> bool:
        return self.task == "image"

    @property
    def is_kv_cache(self) -> bool:
        return self.unit == KV_CACHE

    @property
    def title(self) -> str:
        """The unit as a sentence names it (an image component's title: "VAE decoder")."""
        return COMPONENT_TITLES.get(self.unit or "", self.unit or "")

    def at_step(self) -> str:
        """" at denoising step k of N (timestep t)" when the UNet breaks at a step, else ""."""
        return at_step({"step": self.step, "steps": self.steps, "timestep": self.timestep})

    def figures(self) -> str:
        """An image's figures per component (`component_summary`), "" for text."""
        return component_summary(self.to_dict()) if self.is_image else ""

    def sentence(self, markup: bool = False) -> str:
        """The "Where?" sentence (the panel's, ``markup``: its Markdown), e.g. "model.layers.3 is the first unit whose
        output leaves the reference's (relative error 0.5, tolerance 0.001). Likely cause: ..."."""
        code = (lambda text: f"`{text}`") if markup else (lambda text: text)
        bold = (lambda text: f"**{text}**") if markup else (lambda text: text)
        cause = f"; {self.cause}" if self.cause else ""
        if self.is_image:
            figures = f" Each on the reference's inputs (relative error): {self.figures()}." if self.per_unit else ""
            if self.unit is None:
                return (f"No component breaks: text encoder, UNet and VAE decoder each stay within "
                        f"{self.threshold:g}{cause}." + figures)
            return (f"The {bold(self.title)} is the first component whose output leaves the reference's on the same "
                    f"input{self.at_step()} (relative error {error_text(self.error)}, tolerance {self.threshold:g}). "
                    f"Likely cause: {self.cause}." + figures)
        if self.unit is None and self.over:  # a reduced precision's even growth past the line
            return (f"No layer breaks: {code(self.over['unit'])} reaches {error_text(self.over['error'])}, over the "
                    f"tolerance {self.threshold:g}, yet {self.cause}.")
        if self.unit is None:
            return f"No layer breaks: every unit stays within the tolerance {self.threshold:g}{cause}."
        if self.is_kv_cache:
            return f"The KV cache: {self.cause}."
        parts = ", ".join(f"{name} {error_text(error)}" for name, error in (self.inside or {}).items())
        late = self.start
        at = (f" from position {late['position']} of the "
              f"{'answer' if late['sequence'] == 'output' else late['sequence']} on, where the math changes"
              if late else "")
        return (f"{code(self.unit)} is the first unit whose output leaves the reference's{at} (relative "
                f"error {error_text(self.error)}" + (f", {self.jump:g}x the units just before it" if self.jump else "")
                + f", tolerance {self.threshold:g}" + (f"; inside it: {parts}" if parts else "")
                + f"). Likely cause: {self.cause}.")


def _ratio(value: float) -> str:
    """A ratio for a sentence: "1.012", or "8.6e+15" once it is huge (a broken export's perplexity ratio)."""
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.2g}"


@dataclass(frozen=True)
class Quality:
    """Teacher-forced figures of one backend against the reference on the same tokens (llama.cpp's perplexity-tool
    figures): top-1 agreement, mean KL(P_ref || P_cand) in nats, perplexities; or why there are none."""

    top1: float | None = None  # share of positions where both pick the same top-1 token
    kl: float | None = None  # mean KL (nats)
    kl_max: float | None = None
    ppl_ratio: float | None = None  # ppl_cand / ppl_ref
    ppl_ref: float | None = None
    ppl_cand: float | None = None
    positions: int | None = None
    kl_positions: tuple[float, ...] | None = None  # one sequence's KL at each position
    sequences: dict[str, dict[str, Any]] | None = None  # each sequence's own figures ("output", "paragraph", ...)
    cached: dict[str, Any] | None = None  # a sequence's last positions through the candidate's KV cache
    seconds: float | None = None
    reused: tuple[str, ...] | None = None  # sequences whose figures were kept from an earlier run
    unavailable: str | None = None  # why it could not be measured
    extra: dict[str, Any] = field(default_factory=dict)  # keys this type does not read, kept as written

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Quality:
        """The figures of a verdict's ``metrics["quality"]`` (None or {}: not measured)."""
        typed, rest = _split(cls, data or {}, {})
        for name in ("kl_positions", "reused"):
            if name in typed:
                typed[name] = tuple(typed[name])
        return cls(**typed, extra=rest)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out | self.extra

    @property
    def measured(self) -> bool:
        return not self.unavailable and self.top1 is not None

    def sequence(self, name: str) -> Quality:
        """One teacher-forced sequence's own figures (not measured when it has none)."""
        return Quality.from_dict((self.sequences or {}).get(name))

    def sentence(self) -> str:
        """"teacher-forced top-1 agreement 96.5%, KL 0.003 nats, perplexity ×1.010 over 180 positions" (or why there
        is none)."""
        if self.unavailable:
            return f"teacher-forced quality not available ({self.unavailable})"
        if not self.measured:
            return "teacher-forced quality not measured"
        kept = self.reused or ()
        return (f"teacher-forced top-1 agreement {self.top1:.1%}, KL {self.kl:.3g} nats, "
                f"perplexity ×{_ratio(self.ppl_ratio)} over {self.positions} positions"
                + (f" (the {' and '.join('answer' if k == 'output' else k for k in kept)}'s figures kept from an "
                   "earlier run of the same two models)" if kept else ""))
