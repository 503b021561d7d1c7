"""The judge's per-precision tables against the precision classes the backends map their names onto
(`backends.contract.PRECISION_CLASSES`): a table that holds every candidate has a row for every class (no silent fall
back to fp32's tolerance, as images at int4 had), a table of same-precision floors has a row for every precision
a reference can run at, and every class a backend declares is one of the classes."""

from __future__ import annotations

import pytest

from arena.judging import localize, verdicts
from arena.registry import all_backends, tolerance_class
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
