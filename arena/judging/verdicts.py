"""Is it broken? One verdict per backend with a one-line reason, the way a careful engineer would judge it.

Text: MATCH, DRIFT (fluent but different), WRONG (at the reference's precision, its logits and tokens differ),
LOSSY (a quantized or reduced precision that loses too much, teacher-forced), NOT COMPARED (the reference
failed), GIBBERISH, EMPTY, ERROR. Image: MATCH, DIFFERENT, BLANK, NOISE, NAN,
ERROR. Every output is first judged on its own (so a broken reference cannot hide a problem), then against the
reference backend of the run. Pure numpy (and scikit-image for SSIM): the core runs this in the UI process.

Tolerances depend on the candidate's precision class (`TEXT_TOLERANCES`, `IMAGE_TOLERANCES`, keyed by
`backends.contract.PRECISION_CLASSES`): each backend maps its own precision names onto a class
(`Backend.tolerance_class`: a GGUF type, ONNX Runtime's int8-dynamic), so no backend's vocabulary lives here.
The thresholds of the stand-alone detectors (`GIBBERISH_NLL`, `LOOP_*`, `BLANK_STD`, `NOISE_CORRELATION`) were
set on the labelled corpus in tests/corpus/ and are held to it by tests/test_verdicts.py.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from arena.judging.image_metrics import psnr

# The kinds, each declared once: whether it is broken, how it is shown (TEXT_BROKEN, IMAGE_BROKEN re-exported).
from arena.judging.kinds import IMAGE_BROKEN, KINDS, TEXT_BROKEN, VerdictKind  # noqa: F401
from arena.judging.results import Quality
from arena.registry import backend_class, tolerance_class

# First-step logits against the reference: (max absolute error, max error relative to the largest |logit|).
TEXT_TOLERANCES = {"fp32": (1e-2, 1e-3), "fp16": (0.5, 2e-2), "bf16": (1.0, 5e-2), "int8": (2.0, 1e-1),
                   "int4": (4.0, 2e-1)}


def text_tolerance(precision: str, tolerances: dict[str, Any] | None = None) -> tuple[float, float]:
    """The first-step logits tolerance of a precision: its class's in `TEXT_TOLERANCES`, the class as the backends
    map the name (`arena.registry.tolerance_class`: "Q8_0" -> int8); an unknown name is held to fp32. ``tolerances``:
    given ones in place of the table's (`tolerance_overrides`)."""
    klass = tolerance_class(precision)
    return _overridden(tolerances, ("atol", "rtol"), klass, TEXT_TOLERANCES[klass])[0]


# Teacher-forced quality a precision other than the reference's must keep (llama.cpp's perplexity figures): at
# least this share of positions with the reference's top-1 token, and at most this mean KL(P_ref || P_cand) in
# nats. Measured on SmolLM2-135M (docs/BENCHMARKS.md): 8-bit weight-only 96.9% / 0.005 (kept), 4-bit 69.9% / 0.33
# and dynamic int8 60.2% / 0.66 (lossy); bf16 and fp16 lose far less than the 8-bit weight-only export.
QUALITY_MIN_TOP1 = 0.90
QUALITY_MAX_KL = 0.10
# At the reference's own precision the same figures have a noise floor: (min top-1, max mean KL). Good fp32
# exports of SmolLM2-135M measure top-1 100% and KL 0.0000 against PyTorch fp32, an fp32 graph with its weights
# rounded to fp16 values 99.8% / 0.0000 over 512 positions (docs/verdict-corpus.md); the floors keep a wide margin over
# those. A candidate outside its floor computes something else than the model: WRONG, wherever that starts.
SAME_PRECISION_FLOOR = {"fp32": (0.97, 0.02), "fp16": (0.95, 0.05), "bf16": (0.93, 0.08)}
# A position whose KL exceeds this (nats) is "out" of the floor; the first out position from which at least
# ONSET_SHARE of the rest stay out is where a sequence-dependent bug starts (scattered outliers are noise).
POSITION_KL = {"fp32": 0.02, "fp16": 0.1, "bf16": 0.2}
POSITION_KL_REDUCED = 0.5
ONSET_SHARE = 0.5
ONSET_MIN_TAIL = 16  # an onset needs at least this many positions after it to say it "stays out"
# The decode path (a candidate's own cached decode over its answer, against the reference's full pass over the same
# tokens): a step whose KL passes POSITION_KL is out, at the reference's precision WRONG ("decode path (KV cache)").
# Without the candidate's logits, its answer splitting from the reference's where the reference prefers its own token
# by more than this margin (nats) is no near-tie: a good fp32 export flips only where the two tokens are within
# ~1e-4 nats (its logits agree to ~1e-5), so 1 nat is far outside what precision can do at the same precision.
DECODE_SPLIT_MARGIN = {"fp32": 1.0, "fp16": 2.0, "bf16": 3.0}
# The long reach (a request's ``reach``): the fixed paragraph and the long text after it (assets/long-reach.txt),
# teacher-forced as one sequence up to the reach, full pass; its last positions also through the candidate's KV
# cache after a prefill of the rest, judged like the decode path (a step over POSITION_KL is out).
REACH_SEQUENCE = "long text"
REACH_CACHED_STEPS = 32
# At the reference's precision an image's pipeline components (text encoder, UNet, VAE decoder), each run on the
# reference's own inputs, must agree within this relative error (`arena.judging.localize.UNIT_TOLERANCE`'s fp32):
# good fp32 exports of the embedded image model measure 1e-7 to 4e-7, the same export with every weight rounded
# through fp16 (fair: 66 dB) 1.5e-4 to 2.4e-4, one UNet convolution 5% off 1.4e-3 and one text-encoder matrix 5% off
# 7.4e-3 (both over 50 dB, MATCH by the picture alone). Beyond it the image is WRONG, named by its component.
IMAGE_COMPONENT_FLOOR = {"fp32": 1e-3}
# Image against the reference: minimum PSNR (dB) and SSIM by precision class; every class has its row
# (tests/test_tolerances.py). int4 has no measurement behind it (no backend here draws int4 images yet): looser
# than int8, as the text tables are, rather than fp32's 30 dB by a silent fallback.
IMAGE_TOLERANCES = {"fp32": (30.0, 0.95), "fp16": (20.0, 0.75), "bf16": (20.0, 0.75), "int8": (18.0, 0.7),
                    "int4": (15.0, 0.6)}
# A table keyed by precision class has a row for every class (`backends.contract.PRECISION_CLASSES`), or is named
# here with what a class missing from it gets: a declared fallback, never a silent one (tests/test_tolerances.py
# finds every such table in this module and in `arena.judging.localize`).
TOLERANCE_FALLBACKS = {
    "SAME_PRECISION_FLOOR": "no floor: a reduced precision is held to QUALITY_MIN_TOP1 and QUALITY_MAX_KL (LOSSY)",
    "POSITION_KL": "POSITION_KL_REDUCED per position for the onset; the decode path is not judged (a reduced "
                   "precision's cached steps leave the floor by precision alone)",
    "DECODE_SPLIT_MARGIN": "no split judged from the reference's margin alone (at a reduced precision a split is "
                           "no evidence)",
    "IMAGE_COMPONENT_FLOOR": "no component floor: only a candidate at fp32 is WRONG by its components",
}

# Tolerances a check is given (`arena.judging.check.check`'s ``tolerances``, ``python -m arena check --atol ...``),
# as Polygraphy's comparator takes them (``polygraphy run --atol [out:]value --rtol ...``): one value for every
# precision class, or {class: value} with "" for the others. They replace the table's value they name.
TOLERANCE_OVERRIDES = {
    "atol": ("text", "the first-step logits' max absolute error (`TEXT_TOLERANCES`' first value)"),
    "rtol": ("text", "the first-step logits' max error relative to the largest |logit| (its second value)"),
    "min_psnr": ("image", "the minimum PSNR in dB against the reference (`IMAGE_TOLERANCES`' first value)"),
    "min_ssim": ("image", "the minimum SSIM against the reference (its second value)"),
}


def tolerance_overrides(tolerances: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """``tolerances`` checked and written one way: {name: {precision class or "" (every other class): value}}.
    Raises ValueError naming what is wrong (an unknown name or class, a value that is not a number >= 0)."""
    from backends.contract import PRECISION_CLASSES

    out: dict[str, dict[str, float]] = {}
    for name, given in (tolerances or {}).items():
        if name not in TOLERANCE_OVERRIDES:
            raise ValueError(f"unknown tolerance {name!r}: one of {', '.join(TOLERANCE_OVERRIDES)}")
        per_class = given if isinstance(given, dict) else {"": given}
        out[name] = {}
        for klass, value in per_class.items():
            if klass not in ("", *PRECISION_CLASSES):
                raise ValueError(f"tolerance {name}: {klass!r} is not a precision class "
                                 f"({', '.join(PRECISION_CLASSES)}; none: every class)")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"tolerance {name}: {value!r} is not a number") from None
            if not number >= 0:  # (NaN too)
                raise ValueError(f"tolerance {name}: {value!r} is below 0")
            out[name][klass] = number
    return out


def _overridden(tolerances: dict[str, Any] | None, names: tuple[str, ...], klass: str,
                defaults: tuple[float, float]) -> tuple[tuple[float, float], str | None]:
    """The two tolerances of ``klass`` with the given ones in place, and "atol=0.5, rtol=0.02" when any was given
    (None: the table's)."""
    given = tolerance_overrides(tolerances)
    values = []
    for name, default in zip(names, defaults, strict=True):
        per_class = given.get(name, {})
        values.append(per_class.get(klass, per_class.get("", default)))
    if not any(klass in given.get(name, {}) or "" in given.get(name, {}) for name in names):
        return defaults, None
    return (values[0], values[1]), ", ".join(f"{name}={value:g}" for name, value in zip(names, values, strict=True))

GIBBERISH_NLL = 4.5  # mean negative log-likelihood per token (nats) under the reference model
LOOP_MAX_PERIOD = 4  # a loop of at most this many tokens ...
LOOP_MIN_SHARE = 0.5  # ... covering at least this share of the output is a degenerate loop
MIXED_SCRIPT_SHARE = 0.15  # a second writing system with at least this share of the letters
BLANK_STD = 4.0  # grayscale standard deviation (0-255) under which an image is blank
NOISE_CORRELATION = 0.35  # neighbour-pixel correlation under which an image has no spatial structure


@dataclass(frozen=True)
class Verdict:
    """One output's verdict: a declared kind (`arena.judging.kinds.KINDS`), the one-line reason, whether it is
    broken (its kind's declaration; given, it must agree) and the figures behind it."""
    kind: str
    reason: str
    broken: bool | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        declared = KINDS.get(self.kind)
        if declared is None:
            raise ValueError(f"verdict kind {self.kind!r} is not declared in arena.judging.kinds.KINDS")
        if self.broken is None:
            object.__setattr__(self, "broken", declared.broken)
        elif self.broken != declared.broken:
            raise ValueError(f"a {self.kind} verdict is {'' if declared.broken else 'not '}broken by its declaration")

    @property
    def declared(self) -> VerdictKind:
        return KINDS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sentence(self) -> str:
        """"DRIFT: fluent but diverges at token 12 of 48, ...": the kind and its one-line reason."""
        return f"{self.kind}: {self.reason}"


def reference_index(value: str | int | None, specs) -> int:
    """Which backend of the run is the reference: "auto" is the first configuration its backend says can be the
    reference (`Backend.can_be_reference`: PyTorch fp32), else the first backend; or an index, a backend name or a
    label ("PyTorch · cpu · fp32")."""
    value = "auto" if value in (None, "") else value
    if value == "auto":
        return next((i for i, s in enumerate(specs) if backend_class(s.backend).can_be_reference(s.options)), 0)
    if isinstance(value, int) or str(value).isdigit():
        index = int(value)
        if 0 <= index < len(specs):
            return index
        raise ValueError(f"Reference {index} is out of range: the run has {len(specs)} backend(s).")
    for i, spec in enumerate(specs):
        if str(value).lower() in (spec.backend, spec.label.lower()):
            return i
    raise ValueError(f"Reference '{value}' is not one of the run's backends: "
                     f"{', '.join(s.label for s in specs)}.")


# --- text --------------------------------------------------------------------------------------------------
def loop_share(ids: list[int] | tuple[int, ...], max_period: int = LOOP_MAX_PERIOD) -> tuple[float, int]:
    """The largest share of the output covered by a short loop repeating to its end, and the loop's period."""
    n = len(ids)
    best, best_period = 0.0, 0
    for period in range(1, max_period + 1):
        if n < 3 * period:
            break
        start = n - period
        while start - 1 >= 0 and ids[start - 1] == ids[start - 1 + period]:
            start -= 1
        covered = n - start
        if covered >= 3 * period and covered / n > best:
            best, best_period = covered / n, period
    return best, best_period


def scripts_of(text: str) -> dict[str, int]:
    """Letters per writing system (LATIN, CYRILLIC, CJK, ...)."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            script = unicodedata.name(ch, "UNKNOWN").split(" ")[0]
            counts[script] = counts.get(script, 0) + 1
    return counts


def text_signals(text: str, token_ids: list[int] | tuple[int, ...], unk_token_id: int | None = None,
                 nll: float | None = None) -> dict[str, Any]:
    """What the stand-alone detectors look at, for the result JSON."""
    scripts = scripts_of(text)
    letters = sum(scripts.values())
    minority = letters - max(scripts.values()) if scripts else 0
    share, period = loop_share(list(token_ids))
    return {
        "empty": not text.strip(),
        "replacement_chars": text.count("\ufffd"),
        "unknown_tokens": (sum(t == unk_token_id for t in token_ids) if unk_token_id is not None else 0)
        + text.count("<unk>"),
        "loop_share": round(share, 3), "loop_period": period,
        "scripts": scripts, "minority_script_share": round(minority / letters, 3) if letters else 0.0,
        "nll": None if nll is None else round(float(nll), 3),
    }


def _gibberish_reason(s: dict[str, Any]) -> str | None:
    if s["replacement_chars"] or s["unknown_tokens"]:
        found = [f"{s[key]} {what}" for key, what in (("unknown_tokens", "unknown token(s)"),
                                                     ("replacement_chars", "replacement character(s) (�)")) if s[key]]
        return " and ".join(found) + " in the output"
    if s["loop_share"] >= LOOP_MIN_SHARE:
        return f"a {s['loop_period']}-token loop fills {s['loop_share']:.0%} of the output"
    if s["minority_script_share"] >= MIXED_SCRIPT_SHARE and len(s["scripts"]) > 1:
        names = ", ".join(k.title() for k in sorted(s["scripts"], key=s["scripts"].get, reverse=True))
        return f"mixed writing systems ({names}; {s['minority_script_share']:.0%} not the main one)"
    if s["nll"] is not None and s["nll"] > GIBBERISH_NLL:
        return (f"the reference model finds it implausible: {s['nll']:.1f} nats/token "
                f"(perplexity {np.exp(s['nll']):.0f}; threshold {GIBBERISH_NLL})")
    return None


def logits_error(candidate: Any, reference: Any) -> dict[str, float] | None:
    """Max absolute and relative error of first-step logits (finite entries only), or None if not comparable."""
    if candidate is None or reference is None:
        return None
    a, b = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape:
        return None
    finite = np.isfinite(a) & np.isfinite(b)
    if not finite.any():
        return {"max_abs": float("inf"), "max_rel": float("inf")}
    diff = np.abs(a[finite] - b[finite])
    scale = max(float(np.abs(b[finite]).max()), 1e-6)
    return {"max_abs": float(diff.max()), "max_rel": float(diff.max() / scale)}


def log_softmax(logits: Any) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, in the input's precision (float32 at least): hundreds
    of positions x a 49k vocabulary in float64 cost seconds per backend and run, for no better verdict."""
    x = np.asarray(logits)
    x = x.astype(np.result_type(x.dtype, np.float32), copy=True)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def teacher_forced_quality(reference_log_probs: Any, candidate_log_probs: Any,
                           targets: Any) -> dict[str, Any]:
    """llama.cpp's perplexity-tool figures for a candidate against the reference, both fed the same tokens.

    ``*_log_probs``: (positions, vocab) log-softmax of the next-token distributions; ``targets``: the token that
    really follows at each position. Returns the mean KL(P_ref || P_cand) in nats, the share of positions where
    both pick the same top-1 token, and the perplexity ratio ppl_cand / ppl_ref on ``targets``.
    """
    return summarize_positions(per_position(reference_log_probs, candidate_log_probs, targets))


def per_position(reference_log_probs: Any, candidate_log_probs: Any, targets: Any) -> dict[str, np.ndarray]:
    """The per-position figures `teacher_forced_quality` summarizes: KL, top-1 agreement and both NLLs (float64
    arrays of one value per position). Sequences can be pooled by concatenating these instead of recomputing."""
    ref, cand = np.asarray(reference_log_probs), np.asarray(candidate_log_probs)
    dtype = np.result_type(ref.dtype, cand.dtype, np.float32)
    ref, cand = ref.astype(dtype, copy=False), cand.astype(dtype, copy=False)
    targets = np.asarray(targets, np.int64)
    if ref.shape != cand.shape or ref.ndim != 2 or len(targets) != len(ref) or not len(ref):
        raise ValueError(f"cannot compare next-token distributions of shapes {ref.shape} and {cand.shape} "
                         f"over {len(targets)} target tokens")
    kl = np.einsum("ij,ij->i", np.exp(ref), ref - cand)  # per position; exp(ref) is P_ref
    rows = np.arange(len(targets))
    return {"kl": np.maximum(kl.astype(np.float64), 0.0),
            "top1": (ref.argmax(axis=1) == cand.argmax(axis=1)).astype(np.float64),
            "nll_ref": -ref[rows, targets].astype(np.float64), "nll_cand": -cand[rows, targets].astype(np.float64)}


# A long teacher-forced text (the long reach: thousands of positions) keeps the reference's distributions compact:
# its top `COMPACT_TOP_K` log-probabilities per position and the target's, not the whole vocabulary (4,096
# positions x a 49k vocabulary are 800 MB as float32; compact, 2 MB). KL is then taken over the top-k tokens plus
# one bucket for the rest (a grouping of the same two distributions: never above the full KL, and equal to it up
# to the mass the reference puts outside its top-k: under 1e-3 nats on SmolLM2-135M's paragraph).
COMPACT_TOP_K = 64


def compact_log_probs(log_probs: Any, targets: Any, k: int = COMPACT_TOP_K) -> dict[str, np.ndarray]:
    """The reference's distributions kept compact: per position its top-k token ids and log-probabilities (best
    first) and the log-probability of the token that really follows."""
    lp = np.asarray(log_probs)
    k = min(k, lp.shape[1])
    top = np.argpartition(-lp, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(lp, top, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    rows = np.arange(len(lp))
    return {"top_ids": np.take_along_axis(top, order, axis=1).astype(np.int32),
            "top_lp": np.take_along_axis(values, order, axis=1).astype(np.float32),
            "target_lp": lp[rows, np.asarray(targets, np.int64)].astype(np.float32)}


def per_position_compact(reference: dict[str, np.ndarray], candidate_log_probs: Any,
                         targets: Any) -> dict[str, np.ndarray]:
    """`per_position` against compact reference distributions (`compact_log_probs`): KL over the reference's top-k
    tokens and one bucket for the rest, top-1 agreement with the reference's best token, both NLLs."""
    cand = np.asarray(candidate_log_probs)
    ids, ref_top = np.asarray(reference["top_ids"], np.int64), np.asarray(reference["top_lp"], np.float64)
    targets = np.asarray(targets, np.int64)
    if cand.ndim != 2 or len(cand) != len(ids) or len(targets) != len(ids) or not len(ids):
        raise ValueError(f"cannot compare next-token distributions of shape {cand.shape} with {len(ids)} compact "
                         f"reference positions over {len(targets)} target tokens")
    cand_top = np.take_along_axis(cand, ids, axis=1).astype(np.float64)
    p, q = np.exp(ref_top), np.exp(cand_top)
    p_rest, q_rest = np.clip(1.0 - p.sum(axis=1), 0.0, 1.0), np.clip(1.0 - q.sum(axis=1), 1e-30, 1.0)
    rest = np.where(p_rest > 0, p_rest * (np.log(np.maximum(p_rest, 1e-30)) - np.log(q_rest)), 0.0)
    kl = (p * (ref_top - cand_top)).sum(axis=1) + rest
    rows = np.arange(len(targets))
    return {"kl": np.maximum(kl, 0.0), "top1": (cand.argmax(axis=1) == ids[:, 0]).astype(np.float64),
            "nll_ref": -np.asarray(reference["target_lp"], np.float64),
            "nll_cand": -cand[rows, targets].astype(np.float64)}


def compare_positions(reference: Any, candidate_log_probs: Any, targets: Any) -> dict[str, np.ndarray]:
    """`per_position` for full reference distributions (an array), `per_position_compact` for compact ones (a
    mapping of `compact_log_probs`' arrays)."""
    if isinstance(reference, np.ndarray):
        return per_position(reference, candidate_log_probs, targets)
    return per_position_compact(reference, candidate_log_probs, targets)


def load_distributions(path: str) -> Any:
    """A reference's distributions as written by its worker: an array (``.npy``, memory-mapped: a row is read when
    used) or the compact arrays (``.npz``)."""
    if path.endswith(".npz"):
        with np.load(path) as found:
            return {key: found[key] for key in found.files}
    return np.load(path, mmap_mode="r")


def slice_distributions(reference: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of full or compact distributions (full rows are read from disk here)."""
    if isinstance(reference, np.ndarray):
        return np.asarray(reference[start:stop])
    return {key: value[start:stop] for key, value in reference.items()}


def reference_margin(reference: Any, row: int, token: int) -> tuple[float, int]:
    """How far (nats) the reference prefers its best token over ``token`` at ``row``, and its best token; from
    compact distributions, where ``token`` is outside the top-k, a lower bound (the top-k's last entry)."""
    if isinstance(reference, np.ndarray):
        values = np.asarray(reference[row])
        return float(values.max() - values[token]), int(values.argmax())
    ids, values = reference["top_ids"][row], reference["top_lp"][row]
    found = np.flatnonzero(ids == token)
    return float(values[0] - values[found[0] if len(found) else -1]), int(ids[0])


def summarize_positions(figures: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean KL, top-1 share and perplexities of `per_position` figures (one sequence's, or several concatenated)."""
    kl = figures["kl"]
    nll_ref, nll_cand = figures["nll_ref"].mean(), figures["nll_cand"].mean()
    return {"kl": float(kl.mean()), "kl_max": float(kl.max()), "top1": float(figures["top1"].mean()),
            "ppl_ratio": float(np.exp(nll_cand - nll_ref)), "ppl_ref": float(np.exp(nll_ref)),
            "ppl_cand": float(np.exp(nll_cand)), "positions": int(len(kl)),
            "kl_positions": [float(f"{v:.4g}") for v in kl]}


def pool_summaries(per: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`summarize_positions` of several sequences pooled, from each one's own summary (position-weighted means:
    the same figures as summarizing their concatenated positions), so each sequence's figures can be kept apart."""
    found = [f for f in per.values() if f and f.get("positions")]
    if not found:
        return {}
    n = sum(f["positions"] for f in found)

    def mean(key: str) -> float:
        return sum(f[key] * f["positions"] for f in found) / n

    nll_ref = sum(np.log(f["ppl_ref"]) * f["positions"] for f in found) / n
    nll_cand = sum(np.log(f["ppl_cand"]) * f["positions"] for f in found) / n
    return {"kl": float(mean("kl")), "kl_max": float(max(f["kl_max"] for f in found)), "top1": float(mean("top1")),
            "ppl_ratio": float(np.exp(nll_cand - nll_ref)), "ppl_ref": float(np.exp(nll_ref)),
            "ppl_cand": float(np.exp(nll_cand)), "positions": int(n)}


def position_threshold(precision: str) -> float:
    """The per-position KL (nats) above which a position is out of ``precision``'s noise floor."""
    return POSITION_KL.get(precision, POSITION_KL_REDUCED)


def kl_onset(kl_positions: list[float], threshold: float) -> dict[str, Any] | None:
    """Where a per-position KL curve leaves its floor: {"position" (0-based, of the first out position that the
    rest mostly follow), "kl_before", "kl_after" (means), "share_after" (of positions out from there),
    "kind": "late" | "from the start" | "scattered"}, or None when no position is out."""
    kl = np.asarray(kl_positions, np.float64)
    out = kl > threshold
    if not out.any():
        return None
    # Share of out positions from each position to the end (suffix means), so the onset is one pass.
    suffix = np.cumsum(out[::-1])[::-1] / np.arange(len(out), 0, -1)
    tail = np.arange(len(out), 0, -1)
    candidates = np.flatnonzero(out & (suffix >= ONSET_SHARE) & (tail >= min(ONSET_MIN_TAIL, len(out))))
    if not len(candidates):
        first = int(np.flatnonzero(out)[0])
        return {"position": first, "kl_before": float(kl[:first].mean()) if first else 0.0,
                "kl_after": float(kl[first:].mean()), "share_after": float(suffix[first]), "kind": "scattered"}
    onset = int(candidates[0])
    return {"position": onset, "kl_before": float(kl[:onset].mean()) if onset else 0.0,
            "kl_after": float(kl[onset:].mean()), "share_after": float(suffix[onset]),
            "kind": "from the start" if onset < 4 else "late"}


def sequence_onset(quality: dict[str, Any] | None, precision: str) -> dict[str, Any] | None:
    """The earliest onset over the teacher-forced sequences (each has its own positions), with its sequence's name;
    a sequence-dependent bug shows where a sequence first gets long enough."""
    if not quality or not quality.get("sequences"):
        return None
    threshold = position_threshold(precision)
    found = []
    for name, figures in quality["sequences"].items():
        onset = kl_onset(figures.get("kl_positions") or [], threshold)
        if onset is not None:
            found.append(onset | {"sequence": name, "threshold": threshold})
    if not found:
        return None
    settled = [o for o in found if o["kind"] != "scattered"]
    return min(settled or found, key=lambda o: o["position"])


def quality_sentence(quality: dict[str, Any] | None) -> str:
    """"top-1 96.5%, KL 0.003, ppl ×1.01 over 180 positions" (or why there is none): `Quality.sentence`."""
    return Quality.from_dict(quality).sentence()


def _measured(quality: dict[str, Any] | None) -> bool:
    return Quality.from_dict(quality).measured


def judge_text(text: str, token_ids: list[int] | tuple[int, ...], precision: str, *, error: str | None = None,
               reference_ids: list[int] | tuple[int, ...] | None = None, is_reference: bool = False,
               logits: dict[str, float] | None = None, unk_token_id: int | None = None,
               nll: float | None = None, quality: dict[str, Any] | None = None,
               reference_precision: str | None = None, reference_failed: str | None = None,
               precision_class: str | None = None, decode: dict[str, Any] | None = None,
               tolerances: dict[str, Any] | None = None) -> Verdict:
    """One text output's verdict: on its own first, then against the reference's token ids, logits and
    teacher-forced next-token distributions.

    ``precision`` is the candidate's in its backend's words (detected from a user's graph where possible; "Q4_1"),
    ``precision_class`` the class its backend maps it to (`Backend.tolerance_class`; None: looked up by name), which
    picks the tolerances; ``reference_precision`` the reference's (None: assume the same). ``reference_failed``:
    why the reference has no usable output (then the candidate is NOT COMPARED, never MATCH). ``decode``: the
    candidate's decode path against the reference (`Arena._decode_path`): per-step KL of its cached decode and of its
    full pass, and where its answer splits from the reference's with the reference's margin there. ``tolerances``:
    ``atol``/``rtol`` given in place of `TEXT_TOLERANCES`' (`tolerance_overrides`; the reason says so)."""
    if error:
        return Verdict("ERROR", error.splitlines()[0][:300])
    signals = text_signals(text, token_ids, unk_token_id, nll)
    metrics: dict[str, Any] = {"signals": signals, "logits": logits, "precision": precision}
    if quality:
        metrics["quality"] = quality
    if decode:
        metrics["decode"] = decode
    if signals["empty"]:
        return Verdict("EMPTY", "the output is empty" + (" (only special tokens)" if token_ids else ""),
                       metrics=metrics)
    why = _gibberish_reason(signals)
    same_precision = precision == (reference_precision or precision)
    klass = precision_class or tolerance_class(precision)
    broken_decode = (_decode_problem(decode, klass, precision, len(reference_ids or ()))
                     or _reach_decode_problem(quality, klass, precision)) \
        if same_precision and not is_reference and reference_ids is not None else None
    if why and broken_decode and broken_decode[1]["measured"] and broken_decode[1]["full_agrees"]:
        # Gibberish from a model whose full pass is exact: the cache is what breaks it, the more precise diagnosis.
        sentence, metrics["decode_problem"] = broken_decode
        return Verdict("WRONG", f"at {precision} like the reference, yet {sentence}; on its own: {why}",
                       metrics=metrics)
    if why:
        # The strongest evidence first: the reference's verdict on its distributions, when measured and bad.
        if not is_reference and _measured(quality) and (quality["top1"] < QUALITY_MIN_TOP1
                                                        or quality["kl"] > QUALITY_MAX_KL):
            why = f"{quality_sentence(quality)} against the reference; on its own: {why}"
        return Verdict("GIBBERISH", why, metrics=metrics)
    if is_reference:
        return Verdict("MATCH", "the reference: fluent on its own", metrics=metrics)
    if reference_failed or reference_ids is None:
        return Verdict("NOT COMPARED", "fluent on its own; not compared: "
                       + (f"the reference failed ({reference_failed})" if reference_failed
                          else "no reference to compare with"), metrics=metrics)
    ref, ids = list(reference_ids), list(token_ids)
    same = sum(a == b for a, b in zip(ids, ref, strict=False))
    first = next((i for i, (a, b) in enumerate(zip(ids, ref, strict=False)) if a != b), min(len(ids), len(ref)))
    metrics |= {"agreement": round(same / max(len(ref), len(ids), 1), 3), "first_divergence": first
                if ids != ref else None}
    (abs_tol, rel_tol), given = _overridden(tolerances, ("atol", "rtol"), klass, TEXT_TOLERANCES[klass])
    tolerance_name = f"the given tolerance {given}" if given else f"the {precision} tolerance"
    if given:
        metrics["tolerance"] = {"atol": abs_tol, "rtol": rel_tol, "given": True}
    within = logits is None or (logits["max_abs"] <= abs_tol or logits["max_rel"] <= rel_tol)
    # The tolerance as a rule: the absolute bound, and the relative one when the absolute is over (a large logit
    # scale makes the absolute error large). Two digits, more when two would print the bound itself ("4 > 4").
    def figure(value: float, bound: float) -> str:
        return next((f"{value:.{d}g}" for d in (2, 3) if float(f"{value:.{d}g}") != bound), f"{value:.4g}")

    if logits is None:
        logit_note = ""
    else:
        rule = f"abs {figure(logits['max_abs'], abs_tol)}"
        if logits["max_abs"] <= abs_tol:
            rule += f" ≤ {abs_tol:g}"
        else:
            relative = f"relative {figure(logits['max_rel'], rel_tol)}"
            rule += f" > {abs_tol:g}, but {relative} ≤ {rel_tol:g}" if within else \
                f" > {abs_tol:g} and {relative} > {rel_tol:g}"
        logit_note = f"; first-step logits: {rule}: {'within' if within else 'over'} {tolerance_name}"
    quality_note = f"; {quality_sentence(quality)}" if _measured(quality) else ""
    onset = sequence_onset(quality, klass) if _measured(quality) else None
    if onset is not None:
        metrics["onset"] = onset
    floor = SAME_PRECISION_FLOOR.get(klass)
    if (same_precision and floor is not None and _measured(quality)
            and (quality["top1"] < floor[0] or quality["kl"] > floor[1])):
        where = _onset_sentence(onset)
        tokens = (f"its answer diverges at token {first + 1} of {len(ref)}" if ids != ref else
                  f"its {len(ids)} answer tokens still match")
        return Verdict("WRONG", f"at {precision} like the reference, yet {where}: {quality_sentence(quality)} "
                       f"(the {precision} floor: top-1 ≥ {floor[0]:.0%}, KL ≤ {floor[1]:g}); {tokens}; the model's "
                       f"math differs, not its precision{logit_note}", metrics=metrics)
    if broken_decode:
        sentence, metrics["decode_problem"] = broken_decode
        return Verdict("WRONG", f"at {precision} like the reference, yet {sentence}{logit_note}{quality_note}",
                       metrics=metrics)
    if same_precision and not within and ids != ref:
        bound = tolerance_name if given else f"tolerance {abs_tol:g}"
        return Verdict("WRONG", f"at {precision} like the reference, yet its first-step logits are off by "
                       f"{logits['max_abs']:.2g} ({bound}) and its tokens diverge at token "
                       f"{first + 1} of {len(ref)}: the model's math differs, not its precision{quality_note}",
                       metrics=metrics)
    if not same_precision and _measured(quality) and (quality["top1"] < QUALITY_MIN_TOP1
                                                      or quality["kl"] > QUALITY_MAX_KL):
        return Verdict("LOSSY", f"{precision} loses too much against the {reference_precision} reference: "
                       f"{quality_sentence(quality)} (needed: top-1 ≥ {QUALITY_MIN_TOP1:.0%} and KL ≤ "
                       f"{QUALITY_MAX_KL:g}){logit_note}", metrics=metrics)
    if ids == ref:
        return Verdict("MATCH", f"identical tokens ({len(ids)}){logit_note}{quality_note}", metrics=metrics)
    return Verdict("DRIFT", f"fluent but diverges at token {first + 1} of {len(ref)}, "
                   f"{metrics['agreement']:.0%} of tokens agree{logit_note}{quality_note}", metrics=metrics)


def _reach_decode_problem(quality: dict[str, Any] | None, klass: str,
                          precision: str) -> tuple[str, dict[str, Any]] | None:
    """`_decode_problem` for a teacher-forced sequence's last positions through the candidate's KV cache (the long
    reach's "cached" figures, `BackendHost.quality_against`): a long context's decode path."""
    if not _measured(quality):
        return None
    for name, figures in (quality.get("sequences") or {}).items():
        cached = figures.get("cached") or {}
        if cached.get("kl_steps"):
            found = _decode_problem(cached, klass, precision, 0, sequence=name)
            if found:
                return found
    return None


def _decode_problem(decode: dict[str, Any] | None, klass: str, precision: str,
                    answer_tokens: int, sequence: str | None = None) -> tuple[str, dict[str, Any]] | None:
    """Why a candidate's decode path computes something else than the model, and its figures ({"step" (1-based),
    "full_agrees": whether its own full pass over the same tokens stays within the floor, "measured": from its own
    per-step logits or from the reference's margin alone}), or None: a cached step out of the per-step floor, or,
    without its logits, an answer that leaves the reference's where the reference is far from a tie.
    ``sequence``: the cached steps are a teacher-forced sequence's last positions (``decode["from_position"]`` on,
    after a prefill of ``decode["prefill"]`` tokens), not the candidate's answer."""
    if not decode or klass not in POSITION_KL:
        return None
    threshold = POSITION_KL[klass]
    steps = decode.get("kl_steps") or []
    out = [k for k, v in enumerate(steps) if v > threshold]
    if out and sequence is not None:
        first, position = out[0], int(decode.get("from_position", 0)) + out[0]
        full = decode.get("full_kl_steps") or []
        worst = max(full) if full else None
        whole = ("(its full pass was not measured)" if worst is None else
                 f"while its full pass over the same tokens agrees (KL ≤ {worst:.2g}): the cache computes something "
                 "else than the model at this length" if worst <= threshold else
                 f"and its full pass there disagrees too (KL up to {worst:.2g})")
        return (f"its decode path (KV cache) leaves the reference at position {position} of the {sequence} (cached "
                f"step {first + 1} of {len(steps)} after a {decode.get('prefill', position):,}-token prefill): KL "
                f"{steps[first]:.2g} nats there (the {precision} floor: {threshold:g} per step), {len(out)} of "
                f"{len(steps)} cached steps out, {whole}",
                {"step": first + 1, "position": position, "sequence": sequence,
                 "full_agrees": worst is not None and worst <= threshold, "measured": True})
    if out:
        first = out[0]
        full = decode.get("full_kl_steps")
        if full:
            worst = max(full)
            whole = (f"while its full pass over the same tokens agrees (KL ≤ {worst:.2g}): the cache computes "
                     "something else than the model" if worst <= threshold else
                     f"and its full pass over the same tokens disagrees too (KL up to {worst:.2g})")
        else:
            whole = "(its full pass was not measured)"
        return (f"its decode path (KV cache) leaves the reference at step {first + 1} of {len(steps)}: KL "
                f"{steps[first]:.2g} nats there (the {precision} floor: {threshold:g} per step), {len(out)} of "
                f"{len(steps)} cached steps out, {whole}",
                {"step": first + 1, "full_agrees": bool(full) and max(full) <= threshold, "measured": True})
    split = decode.get("split")
    margin = DECODE_SPLIT_MARGIN.get(klass)
    if split and margin is not None and not steps and split["margin"] > margin:
        return (f"its answer leaves the reference's at token {split['step'] + 1} of {answer_tokens}, where the "
                f"reference prefers its own token by {split['margin']:.2g} nats (an {precision} near-tie is under "
                f"{margin:g}): its decode path computes something else. Less certain than a measured step: this "
                "backend returns no per-step logits, so this is judged from the reference's distributions alone",
                {"step": split["step"] + 1, "full_agrees": None, "measured": False})
    return None


def _onset_sentence(onset: dict[str, Any] | None) -> str:
    """"identical for the first 120 positions of the paragraph, then KL 1.2 per position from position 120 on"."""
    if onset is None:
        return "its next-token distributions leave the floor"
    where = "the answer" if onset["sequence"] == "output" else f"the {onset['sequence']}"
    if onset["kind"] == "late":
        before = "identical" if onset["kl_before"] < 1e-3 else f"within the floor (KL {onset['kl_before']:.2g})"
        return (f"{before} for the first {onset['position']} positions of {where}, then KL "
                f"{onset['kl_after']:.2g} per position from position {onset['position']} on")
    if onset["kind"] == "from the start":
        return f"its next-token distributions differ from the first positions of {where} (KL {onset['kl_after']:.2g})"
    return (f"its next-token distributions leave the floor at scattered positions of {where}, the first at "
            f"{onset['position']}")


# --- images -------------------------------------------------------------------------------------------------
def neighbour_correlation(image: np.ndarray) -> float:
    """Mean correlation of each pixel with its right and lower neighbours (grayscale): ~1 for pictures, ~0 for
    white noise."""
    gray = np.asarray(image, np.float64).mean(axis=2)
    gray = gray - gray.mean()
    denominator = (gray * gray).mean()
    if denominator == 0:
        return 1.0
    horizontal = (gray[:, 1:] * gray[:, :-1]).mean() / denominator
    vertical = (gray[1:, :] * gray[:-1, :]).mean() / denominator
    return float((horizontal + vertical) / 2)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    side = min(a.shape[0], a.shape[1])
    window = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(a, b, channel_axis=2, data_range=255, win_size=window))


def difference_heatmap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| per pixel as a black-red-yellow heatmap (full scale at 64 levels of difference), uint8 HxWx3."""
    diff = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean(axis=2)
    v = np.clip(diff / 64.0, 0, 1)
    rgb = np.stack([np.clip(2 * v, 0, 1), np.clip(2 * v - 1, 0, 1), np.zeros_like(v)], axis=2)
    return (rgb * 255).round().astype(np.uint8)


def image_signals(image: np.ndarray) -> dict[str, Any]:
    gray = np.asarray(image, np.float64).mean(axis=2)
    return {"mean": round(float(gray.mean()), 2), "std": round(float(gray.std()), 2),
            "neighbour_correlation": round(neighbour_correlation(image), 3)}


def judge_image(image: np.ndarray | None, precision: str, *, error: str | None = None,
                reference: np.ndarray | None = None, is_reference: bool = False,
                precision_class: str | None = None, tolerances: dict[str, Any] | None = None) -> Verdict:
    """One image's verdict: on its own (NaN, blank, noise), then against the reference's image (PSNR or SSIM within
    the tolerance of ``precision_class``, the class its backend maps ``precision`` to; None: looked up by name).
    ``tolerances``: ``min_psnr``/``min_ssim`` given in place of `IMAGE_TOLERANCES`' (the reason says so)."""
    if error:
        kind = "NAN" if "NaN" in error else "ERROR"
        return Verdict(kind, error.splitlines()[0][:300])
    if image is None:
        return Verdict("ERROR", "no image came back")
    if not np.isfinite(np.asarray(image, np.float64)).all():
        return Verdict("NAN", "the image has NaN or Inf pixels")
    signals = image_signals(image)
    metrics: dict[str, Any] = {"signals": signals}
    if signals["std"] < BLANK_STD:
        shade = "black" if signals["mean"] < 16 else "white" if signals["mean"] > 239 else "one flat color"
        return Verdict("BLANK", f"a near-constant image ({shade}: mean {signals['mean']:.0f}, "
                       f"std {signals['std']:.1f})", metrics=metrics)
    if signals["neighbour_correlation"] < NOISE_CORRELATION:
        return Verdict("NOISE", f"no spatial structure: neighbouring pixels correlate "
                       f"{signals['neighbour_correlation']:.2f} (pictures: > 0.8)", metrics=metrics)
    if is_reference or reference is None:
        return Verdict("MATCH", "the reference: a picture on its own" if is_reference else
                       "a picture on its own (no reference to compare with)", metrics=metrics)
    if reference.shape != image.shape:
        return Verdict("DIFFERENT", f"size {image.shape[:2]} differs from the reference's {reference.shape[:2]}",
                       metrics=metrics)
    db, structure = psnr(image, reference), ssim(image, reference)
    metrics |= {"psnr_db": None if db == float("inf") else round(db, 2), "ssim": round(structure, 4)}
    klass = precision_class or tolerance_class(precision)
    (min_db, min_ssim), given = _overridden(tolerances, ("min_psnr", "min_ssim"), klass, IMAGE_TOLERANCES[klass])
    if given:
        metrics["tolerance"] = {"min_psnr": min_db, "min_ssim": min_ssim, "given": True}
    shown = "∞" if db == float("inf") else f"{db:.1f}"
    if db >= min_db or structure >= min_ssim:
        return Verdict("MATCH", f"PSNR {shown} dB, SSIM {structure:.3f} vs the reference"
                       + (f", within the given tolerance {given}" if given else ""), metrics=metrics)
    return Verdict("DIFFERENT", f"PSNR {shown} dB and SSIM {structure:.3f} vs the reference are below "
                   + (f"the given tolerance {given}" if given else
                      f"the {precision} tolerance ({min_db:g} dB or SSIM {min_ssim:g})"), metrics=metrics)


def image_floor_verdict(verdict: Verdict, where: dict[str, Any] | None, precision: str,
                        precision_class: str) -> Verdict:
    """At the reference's precision: an image whose component leaves the reference's by more than
    `IMAGE_COMPONENT_FLOOR` on the same input is WRONG, even when the picture looks close. ``where``: the component
    figures (`arena.judging.localize_image.localize_components`)."""
    floor = IMAGE_COMPONENT_FLOOR.get(precision_class)
    if floor is None or verdict.broken or not where or not where.get("per_unit"):
        return verdict
    over = [e for e in where["per_unit"] if e.get("error") is not None and e["error"] > floor]
    if not over:
        return verdict
    from arena.judging.localize_image import TITLES, at_step

    first = over[0]
    return Verdict("WRONG", f"at {precision} like the reference, yet its {TITLES.get(first['unit'], first['unit'])} "
                   f"computes something else on the reference's own input{at_step(first)} (relative error "
                   f"{first['error']:.2g}, the {precision} floor {floor:g}; weights rounded through fp16 measure "
                   f"~2e-4), though the picture looks close ({verdict.reason})",
                   metrics=verdict.metrics | {"floor": floor})
