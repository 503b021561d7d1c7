"""Where did an image break: which component of a diffusion pipeline (text encoder, UNet, VAE decoder) computes
something else, swapped in one at a time.

The reference runs each component on the run's shared input: the prompts' token ids through its text encoder;
its own denoising loop once more, untimed, keeping its UNet's input at each denoising step (the classifier-free
guidance batch, both halves, scaled for that step's timestep, as the pipeline makes it), the timestep and its raw
prediction, with its own embeddings (every step up to `backends.hf.UNET_STEPS_MAX` steps and
`backends.hf.UNET_STEPS_MAX_BYTES` bytes, else the first, the last and an even spread between); its own final
latents through its VAE decoder. The candidate runs each of its components on exactly those inputs
(`Backend.image_component_outputs`), its UNet once per kept step, so each error is the component's own and never
inherited from the one before (nor from an earlier step). The first component whose relative error
``||candidate - reference|| / ||reference||`` is over the tolerance of the candidate's precision class (the text
units' table, `arena.judging.localize.UNIT_TOLERANCE`) is where it breaks; the UNet breaks at the first step over
it, so a UNet wrong only late in the schedule (small timesteps) is named even when its first step is clean.

The result has the text localization's shape (``unit``, ``error``, ``threshold``, ``per_unit``, ``cause``), so the
"Where?" line, the chart, the report and ``python -m arena check`` show both; each component's entry adds its
largest absolute difference, its NaN/Inf count and, for the VAE decoder, the PSNR of its image; the UNet's adds
``per_step`` ([{step, timestep, error}], steps counted from 1) and the ``step``, ``timestep`` and ``steps`` its
figures are of (the first step over tolerance, else the one with the largest error), which the result repeats when
the UNet is where it breaks. Pure numpy: the core runs this in the UI process.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from arena.judging.localize import UNIT_TOLERANCE, _round, unit_error

# The sentences' helpers live with the typed result (`arena.judging.results.Where`, numpy-free for the UI process).
from arena.judging.results import COMPONENT_TITLES as TITLES
from arena.judging.results import at_step  # noqa: F401 - re-exported
from arena.judging.results import component_broken as _broken
from arena.judging.results import component_summary as summary  # noqa: F401 - re-exported

COMPONENTS = ("text_encoder", "unet", "vae_decoder")  # forward order: the first over tolerance is where it breaks

# (signature, cause): the table the cause sentence comes from (docs/architecture.md reproduces it); each held by
# a test that damages that component of a real export (tests/test_localize_image.py).
SIGNATURES = {
    "text_encoder": "the text encoder gives other embeddings for the reference's own token ids: its weights or its "
                    "position embeddings (not the tokenizer: the ids were the reference's)",
    "text_encoder_overflow": "the text encoder gives NaN/Inf for the reference's token ids: an overflow in its "
                             "attention or MLP (fp16?), or broken weights",
    "unet": "the UNet predicts other noise from the reference's latents, timestep and embeddings: its weights, its "
            "timestep embedding or its cross-attention",
    "unet_late": "the UNet predicts the reference's noise at the first step but not at later ones (lower noise, "
                 "smaller timesteps): its timestep embedding, or a branch the early steps do not use, is wrong",
    "unet_overflow": "the UNet gives NaN/Inf on the reference's finite inputs: an overflow (fp16 attention?) or "
                     "broken weights",
    "vae_decoder": "the VAE decoder draws another image from the reference's latents: its weights, or another "
                   "latent scaling",
    "vae_decoder_overflow": "overflow in the VAE decoder: NaN/Inf from the reference's finite latents, as an fp16 "
                            "VAE without upcast does (keep the VAE in fp32)",
    "loop": "every component agrees on the reference's inputs: the difference comes from the loop around them (the "
            "scheduler, the guidance arithmetic) or from small errors compounding over the steps",
    "precision": "every component stays within the tolerance: the image differs by what reduced precision does over "
                 "the steps (precision, not a bug)",
}


def component_figures(reference: np.ndarray, candidate: np.ndarray, component: str) -> dict[str, Any]:
    """One component's figures: relative error (None for NaN/Inf: strict JSON has no infinity), largest absolute
    difference over the finite values, NaN/Inf count; the VAE decoder's PSNR (its output in [-1, 1])."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    error = unit_error(reference, candidate)
    if error is None:
        return {"unit": component, "error": None, "shape_mismatch": [list(reference.shape), list(candidate.shape)]}
    finite = np.isfinite(candidate)
    figures: dict[str, Any] = {"unit": component, "error": _round(error),
                               "max_abs": _round(float(np.abs(candidate - reference)[finite].max()))
                               if finite.any() else None,
                               "non_finite": int((~finite).sum())}
    if component == "vae_decoder" and finite.all():
        mse = float(np.mean((np.clip(candidate, -1, 1) - np.clip(reference, -1, 1)) ** 2))
        figures["psnr_db"] = 99.0 if mse == 0 else round(10 * np.log10(4.0 / mse), 2)  # peak-to-peak 2
    return figures


def unet_figures(reference: np.ndarray, candidate: np.ndarray, steps: dict[str, Any],
                 threshold: float) -> dict[str, Any]:
    """The UNet's figures over the kept denoising steps (``reference``/``candidate`` stacked along the first axis,
    one row per step of ``steps``: {"index": 0-based steps, "timestep": [...], "total": steps in the run}): every
    step's relative error in ``per_step``, and the figures of the first step over ``threshold`` (else of the step
    with the largest error)."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if reference.shape != candidate.shape:
        return {"unit": "unet", "error": None,
                "shape_mismatch": [list(reference.shape[1:]), list(candidate.shape[1:])]}
    figures = [component_figures(reference[i], candidate[i], "unet") for i in range(len(reference))]
    per_step = []
    for entry, index, timestep in zip(figures, steps["index"], steps["timestep"], strict=True):
        row = {"step": int(index) + 1, "timestep": _round(float(timestep)), "error": entry["error"]}
        if entry.get("non_finite"):
            row["non_finite"] = entry["non_finite"]
        per_step.append(row)
    over = [i for i, entry in enumerate(figures) if _broken(entry, threshold)]
    chosen = over[0] if over else max(range(len(figures)), key=lambda i: figures[i]["error"])
    return figures[chosen] | {"step": per_step[chosen]["step"], "timestep": per_step[chosen]["timestep"],
                              "steps": int(steps["total"]), "per_step": per_step}


def localize_components(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                        precision_class: str, errors: dict[str, str] | None = None,
                        image_broken: bool = True, steps: dict[str, Any] | None = None) -> dict[str, Any]:
    """The first component among `COMPONENTS` whose output leaves the reference's on the same input, its figures
    and the cause; ``errors`` are the candidate's components that failed to run (a break where they fail).
    ``image_broken``: whether the candidate's image was judged broken (with no component over tolerance, the cause
    then says the difference comes from the loop, or from reduced precision). ``steps`` (`unet_steps` of the
    reference's inputs): the UNet's outputs are one row per kept denoising step, compared step by step."""
    threshold = UNIT_TOLERANCE.get(precision_class, UNIT_TOLERANCE["fp32"])
    errors = errors or {}
    per_unit: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    for component in COMPONENTS:
        if component in errors:
            entry = {"unit": component, "error": None, "failed": errors[component]}
        elif component in reference and component in candidate:
            entry = (unet_figures(reference[component], candidate[component], steps, threshold)
                     if component == "unet" and steps else
                     component_figures(reference[component], candidate[component], component))
        else:
            continue
        per_unit.append(entry)
        if first is None and _broken(entry, threshold):
            first = entry
    where: dict[str, Any] = {"unit": first["unit"] if first else None, "error": first["error"] if first else None,
                             "threshold": threshold, "per_unit": per_unit, "cause": None, "task": "image"}
    if first is not None and "per_step" in first:
        where |= {key: first[key] for key in ("step", "timestep", "steps")}
    if first is None:
        if image_broken and per_unit:
            reduced = precision_class != "fp32" and max((e["error"] or 0.0) for e in per_unit) > threshold / 20
            where["cause"] = SIGNATURES["precision" if reduced else "loop"]
        return where
    where["cause"] = cause(first)
    if first.get("non_finite"):
        where["non_finite"] = True
    return where


def cause(entry: dict[str, Any]) -> str:
    """The signature sentence of a break at ``entry``'s component (never a guess beyond the table)."""
    component = entry["unit"]
    if "failed" in entry:
        return f"the {TITLES[component]} fails on the reference's inputs: {entry['failed']}"
    if "shape_mismatch" in entry:
        reference, candidate = entry["shape_mismatch"]
        return (f"the {TITLES[component]} gives shape {candidate} where the reference's gives {reference}: another "
                "export configuration (image size, sequence length, channels)")
    if entry.get("non_finite"):
        return SIGNATURES[component + "_overflow"]
    if component == "unet" and entry.get("per_step") and entry["per_step"][0]["step"] != entry["step"]:
        return SIGNATURES["unet_late"]  # its first kept step agrees: only later ones break
    return SIGNATURES[component]


def unet_steps(inputs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The kept denoising steps of the reference's component inputs (`Backend.image_component_outputs`):
    {"index": 0-based steps, "timestep": each one's timestep, "total": the run's steps}; None for inputs of one
    step (the UNet's output then is one step's, not stacked)."""
    if not inputs or "unet_steps" not in inputs:
        return None
    return {"index": [int(i) for i in np.asarray(inputs["unet_steps"]).reshape(-1)],
            "timestep": [float(t) for t in np.asarray(inputs["timestep"]).reshape(-1)],
            "total": int(np.asarray(inputs["unet_total"]))}
