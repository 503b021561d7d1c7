"""The judge's per-precision tables against the precision classes the backends map their names onto
(`backends.contract.PRECISION_CLASSES`): a table that holds every candidate has a row for every class (no silent fall
back to fp32's tolerance, as images at int4 had), a table of same-precision floors has a row for every precision
a reference can run at, a table without every class declares what a missing class gets
(`verdicts.TOLERANCE_FALLBACKS`), and every class a backend declares is one of the classes. Tolerances given to a
check (Polygraphy's ``--atol``/``--rtol``, per precision class or for all) replace the tables' and say so."""

from __future__ import annotations

import numpy as np
import pytest

from arena.judging import localize, verdicts
from arena.registry import all_backends, tolerance_class
from arena.types import BackendSpec
from backends.contract import PRECISION_CLASSES

EVERY_CLASS = {"TEXT_TOLERANCES": verdicts.TEXT_TOLERANCES, "IMAGE_TOLERANCES": verdicts.IMAGE_TOLERANCES,
               "UNIT_TOLERANCE": localize.UNIT_TOLERANCE}
# Floors at the reference's own precision: the precisions a reference runs at (PyTorch's fp32, fp16, bf16).
REFERENCE_CLASSES = {"fp32", "fp16", "bf16"}
SAME_PRECISION = {"SAME_PRECISION_FLOOR": verdicts.SAME_PRECISION_FLOOR, "POSITION_KL": verdicts.POSITION_KL,
                  "DECODE_SPLIT_MARGIN": verdicts.DECODE_SPLIT_MARGIN}


@pytest.mark.parametrize("name", sorted(EVERY_CLASS))
def test_tables_for_every_candidate_have_a_row_per_precision_class(name):
    assert set(EVERY_CLASS[name]) == set(PRECISION_CLASSES), name


@pytest.mark.parametrize("name", sorted(SAME_PRECISION))
def test_same_precision_floors_cover_every_reference_precision(name):
    assert set(SAME_PRECISION[name]) == REFERENCE_CLASSES, name


def test_the_tolerances_loosen_as_the_precision_drops():
    order = ["fp32", "bf16", "int8", "int4"]  # fp16 sits between fp32 and bf16 (its mantissa is longer)
    for a, b in zip(order, order[1:], strict=False):
        assert verdicts.TEXT_TOLERANCES[a] <= verdicts.TEXT_TOLERANCES[b], (a, b)
        assert localize.UNIT_TOLERANCE[a] <= localize.UNIT_TOLERANCE[b], (a, b)
        assert verdicts.IMAGE_TOLERANCES[a] >= verdicts.IMAGE_TOLERANCES[b], (a, b)  # minimum PSNR and SSIM


def test_every_backends_precision_names_map_onto_a_class():
    for name, cls in all_backends().items():
        for info in cls.Options.fields_info():
            if info.name != "precision":
                continue
            for value in info.choices:
                assert cls.tolerance_class(value) in PRECISION_CLASSES, (name, value)
    for spelled in ("Q8_0", "q4_k_m", "FP16", "float32", "who-knows"):
        assert tolerance_class(spelled) in PRECISION_CLASSES, spelled


def precision_tables() -> dict[str, dict]:
    """Every table of the judge keyed by precision class (a dict whose keys are classes), found in its modules: a
    new table is held to the rules below without being listed here."""
    found = {}
    for module in (verdicts, localize):
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, dict) and value and set(value) <= set(PRECISION_CLASSES):
                found[name] = value
    return found


def test_a_class_missing_from_a_table_is_a_declared_fallback():
    """A table keyed by precision class has every class, or says in `TOLERANCE_FALLBACKS` what a missing class gets
    (no silent fall back to fp32's row); a declared partial table still has every precision a reference runs at."""
    tables = precision_tables()
    assert set(EVERY_CLASS) | set(SAME_PRECISION) | {"IMAGE_COMPONENT_FLOOR"} <= set(tables), set(tables)
    for name, table in tables.items():
        if set(table) != set(PRECISION_CLASSES):
            assert name in verdicts.TOLERANCE_FALLBACKS, f"{name} lacks {set(PRECISION_CLASSES) - set(table)}: " \
                "give it every class or declare its fallback in verdicts.TOLERANCE_FALLBACKS"
    for name in verdicts.TOLERANCE_FALLBACKS:
        assert name in tables and set(tables[name]) != set(PRECISION_CLASSES), f"{name} needs no fallback"
        assert "fp32" in tables[name], name
    # The fallbacks as the code applies them: a reduced precision's onset threshold, and no floor.
    assert verdicts.position_threshold("int8") == verdicts.POSITION_KL_REDUCED
    assert verdicts.SAME_PRECISION_FLOOR.get("int4") is None and verdicts.IMAGE_COMPONENT_FLOOR.get("fp16") is None


# --- tolerances given to a check (Polygraphy's --atol / --rtol) -----------------------------------------------
REF = list(range(10, 30))
OTHER = REF[:5] + [99] + REF[6:]


def test_given_text_tolerances_replace_the_tables_and_the_reason_says_so():
    off = {"max_abs": 0.8, "max_rel": 0.04}  # over fp32's (1e-2, 1e-3): WRONG at the reference's precision
    wrong = verdicts.judge_text("Fluent.", OTHER, "fp32", reference_ids=REF, logits=off, reference_precision="fp32")
    assert wrong.kind == "WRONG" and "(tolerance 0.01)" in wrong.reason and "tolerance" not in wrong.metrics
    given = verdicts.judge_text("Fluent.", OTHER, "fp32", reference_ids=REF, logits=off, reference_precision="fp32",
                                tolerances={"atol": 1.0})
    assert given.kind == "DRIFT" and not given.broken, given
    assert "abs 0.8 ≤ 1: within the given tolerance atol=1, rtol=0.001" in given.reason, given.reason
    assert given.metrics["tolerance"] == {"atol": 1.0, "rtol": 1e-3, "given": True}
    # Per precision class, "" for the others (Polygraphy's per-output form): fp16's does not apply at fp32.
    other_class = verdicts.judge_text("Fluent.", OTHER, "fp32", reference_ids=REF, logits=off,
                                      reference_precision="fp32", tolerances={"atol": {"fp16": 1.0}})
    assert other_class.reason == wrong.reason
    stricter = verdicts.judge_text("Fluent.", OTHER, "fp32", reference_ids=REF, logits=off,
                                   reference_precision="fp32", tolerances={"atol": {"fp32": 0.1, "": 5.0},
                                                                           "rtol": 0.01})
    assert stricter.kind == "WRONG" and "(the given tolerance atol=0.1, rtol=0.01)" in stricter.reason
    assert verdicts.text_tolerance("Q8_0", {"rtol": {"int8": 0.5}}) == (2.0, 0.5)


def test_given_image_tolerances_replace_the_tables_and_the_reason_says_so():
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 255, size=(8, 8, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    noisy = np.clip(base.astype(int) + rng.integers(-12, 13, size=base.shape), 0, 255).astype(np.uint8)
    default = verdicts.judge_image(noisy, "fp16", reference=base)
    assert default.kind == "MATCH" and default.reason.endswith("vs the reference"), default.reason
    strict = verdicts.judge_image(noisy, "fp16", reference=base, tolerances={"min_psnr": 60, "min_ssim": 0.999})
    assert strict.kind == "DIFFERENT" and strict.broken
    assert strict.reason.endswith("below the given tolerance min_psnr=60, min_ssim=0.999"), strict.reason
    loose = verdicts.judge_image(noisy, "fp16", reference=base, tolerances={"min_psnr": {"fp16": 10}})
    assert loose.reason.endswith(", within the given tolerance min_psnr=10, min_ssim=0.75"), loose.reason


def test_tolerances_are_checked_before_anything_runs():
    from types import SimpleNamespace

    from arena.judging.check import check

    assert verdicts.tolerance_overrides({"atol": 0.5, "rtol": {"fp16": "0.1", "": 0}}) == {
        "atol": {"": 0.5}, "rtol": {"fp16": 0.1, "": 0.0}}
    for bad, words in (({"tol": 1}, "unknown tolerance"), ({"atol": {"fp8": 1}}, "not a precision class"),
                       ({"atol": "x"}, "not a number"), ({"rtol": -1}, "below 0")):
        with pytest.raises(ValueError, match=words):
            verdicts.tolerance_overrides(bad)
    arena = SimpleNamespace(policy=SimpleNamespace(public=False, refuse_check=lambda prompts: None))
    spec = BackendSpec("onnxruntime")
    report = check(arena, "m", spec, task="text", atol="fp8:1")
    assert report["broken"] and "not a precision class" in report["error"] and not report["checks"]
    report = check(arena, "m", spec, task="image", atol="1")
    assert report["error"] == "Tolerances: atol judges text checks, not this image check.", report["error"]


def test_a_check_reads_tolerances_as_polygraphy_does():
    """One value for every precision class, PRECISION:VALUE for one, several separated by commas (the CLI's
    ``--atol 0.5,fp16:1e-2``, /check's ``atol="0.5,fp16:1e-2"``); empty: the tables'."""
    from arena.judging.check import CheckRequest

    request = CheckRequest.from_values({"model": "m", "candidate": "onnxruntime", "atol": "0.5,fp16:1e-2",
                                        "rtol": "int8:0.3"})
    assert verdicts.tolerance_overrides(request.tolerances()) == {"atol": {"": 0.5, "fp16": 0.01},
                                                                  "rtol": {"int8": 0.3}}
    assert CheckRequest.from_values({"model": "m", "candidate": "onnxruntime"}).tolerances() == {}
