"""Today's architectures through both exporters of the ONNX Runtime backend, held to the PyTorch fp32 reference.

Each architecture of `tests.support.architectures` (tiny random models built from transformers' own config classes:
Gemma 4, Qwen3.5, Ministral 3 / Mistral 3, SmolLM3, gpt-oss, LFM2 and more) is exported once per exporter (torch.onnx's
dynamo exporter, ONNX Runtime GenAI's model builder) and run by the arena's own loop (`backends.loops`): the
prompt's logits with an empty cache must be the reference's within the fp32 tolerance the verdicts use, and the
cached decode path, teacher-forced along the reference's answer, must stay under the fp32 KL floor. An exporter that
cannot take an architecture must say so in one sentence naming both (`ExportRefused`), never with a traceback.
The same matrix, with its figures, is docs/exporters.md (`scripts/exporter_coverage.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arena.judging.verdicts import POSITION_KL, SAME_PRECISION_FLOOR, TEXT_TOLERANCES
from backends.conversion.onnx_export import EXPORTER_TITLES
from tests.support import ROOT
from tests.support.architectures import (
    ALL,
    BY_KEY,
    EXPORTERS,
    KNOWN_FAILURES,
    PROMPT,
    judge_cell,
    prepare_all,
    reference,
)

# The cells that export and compute the reference's function today: a refusal there is a regression. Any other
# cell may be refused (in the form below) or, once an exporter learns it, must compute the reference's function.
MUST_EXPORT = {
    *(("dynamo", key) for key in ("gemma4_text", "gemma4", "ministral3", "smollm3", "qwen3", "gemma3_text", "olmo3",
                                  "exaone4", "glm4", "gpt_oss", "qwen3_moe", "mistral3")),
    *(("genai-builder", key) for key in ("qwen3", "gpt_oss", "lfm2")),
}


def cells() -> list:
    return [pytest.param(arch.key, exporter, id=f"{arch.key}-{exporter}",
                         marks=[pytest.mark.xfail(strict=True, reason=why)]
                         if (why := KNOWN_FAILURES.get((exporter, arch.key))) else [])
            for arch in ALL for exporter in EXPORTERS]


CLI_MODEL = "gemma4_text"  # the architecture the end-to-end check runs on


class Matrix:
    """Every architecture built and exported once for the module, by two worker processes that start at once and
    keep ahead of the tests (`prepare_all`); the references and the cells measured here, once each. The end-to-end
    CLI check starts in the background as soon as its model is built, beside the rest of the matrix."""

    def __init__(self, root: Path) -> None:
        self.root, self._references, self._cells, self._cli = root, {}, {}, None
        self._futures = prepare_all([a.key for a in ALL], root)
        self._futures[CLI_MODEL].add_done_callback(lambda future: future.exception() or self._start_cli())

    def _start_cli(self) -> None:
        cache, cli = self.root / "arena-cache", self.root / "cli"
        cli.mkdir()
        env = dict(os.environ, ARENA_CACHE_DIR=str(cache))
        with open(cli / "stdout", "w") as out, open(cli / "stderr", "w") as err:  # files: no pipe to fill meanwhile
            self._cli = subprocess.Popen(
                [sys.executable, "-m", "arena", "check", "--model", str(self.root / CLI_MODEL / "model"),
                 "--candidate", "onnxruntime", "--prompt", PROMPT, "--max-new-tokens", "16", "--cache-dir",
                 str(cache), "--json"], cwd=ROOT, env=env, stdout=out, stderr=err)

    def cli_check(self) -> tuple[int, str, str]:
        """The CLI's exit code, stdout and stderr."""
        self.exported(CLI_MODEL)
        while self._cli is None:  # the done-callback runs right after the future resolves
            time.sleep(0.05)
        code = self._cli.wait(timeout=600)
        return code, (self.root / "cli" / "stdout").read_text(), (self.root / "cli" / "stderr").read_text()

    def exported(self, key: str) -> dict:
        return self._futures[key].result()

    def model(self, key: str) -> Path:
        self.exported(key)
        return self.root / key / "model"

    def reference(self, key: str) -> dict:
        if key not in self._references:
            self._references[key] = reference(self.model(key))
        return self._references[key]

    def cell(self, key: str, exporter: str):
        if (key, exporter) not in self._cells:
            self._cells[key, exporter] = judge_cell(key, self.exported(key)[exporter], self.reference(key))
        return self._cells[key, exporter]

    def close(self) -> None:
        self._futures["pool"].shutdown(wait=True, cancel_futures=True)
        if self._cli is not None and self._cli.poll() is None:
            self._cli.kill()
            self._cli.wait()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    found = Matrix(tmp_path_factory.mktemp("architectures"))
    yield found
    found.close()


def assert_refusal_sentence(sentence: str, key: str, exporter: str) -> None:
    """One sentence that names the exporter and the architecture (its class and model type), no traceback."""
    arch = BY_KEY[key]
    model_type = arch.wrapper or arch.model_type
    assert sentence.startswith(f"The {EXPORTER_TITLES[exporter]} "), sentence
    assert " cannot " in sentence and f"{arch.model_class} ({model_type})" in sentence, sentence
    assert "\n" not in sentence and "Traceback" not in sentence and len(sentence) < 800, sentence


@pytest.mark.parametrize(("key", "exporter"), cells())
def test_export_computes_the_reference(matrix, key, exporter, record_property):
    """The export's prompt logits (empty cache) within the fp32 tolerance and its cached decode path under the fp32
    KL floor, or a one-sentence refusal."""
    cell = matrix.cell(key, exporter)
    record_property("outcome", cell.outcome)
    if cell.outcome == "refused":
        assert_refusal_sentence(cell.refused, key, exporter)
        assert (exporter, key) not in MUST_EXPORT, f"{exporter} exported {key} before; now: {cell.refused}"
        return
    assert cell.error is None, f"the arena's loop cannot run the {exporter} export of {key}: {cell.error}"
    assert cell.outcome == "pass", f"the {exporter} export of {key} computes something else: {cell.problems}"
    # The bounds, spelled out (the same as `fp32_problems`): the arena's own fp32 figures.
    first, decode = cell.figures["first_step"], cell.figures["decode"]
    abs_tol, rel_tol = TEXT_TOLERANCES["fp32"]
    assert first["max_abs"] <= abs_tol or first["max_rel"] <= rel_tol
    assert decode["steps"] == len(matrix.reference(key)["answer"])
    assert max(decode["kl_steps"]) <= POSITION_KL["fp32"] and decode["kl"] <= SAME_PRECISION_FLOOR["fp32"][1]
    assert decode["top1"] >= SAME_PRECISION_FLOOR["fp32"][0]


@pytest.mark.slow
def test_cli_check_of_gemma4_is_not_broken_by_the_conversion(matrix):
    """`python -m arena check --candidate onnxruntime` on Gemma 4 (text): the arena exports it with its default
    exporter (dynamo), runs both sides and judges. A random model's output is gibberish, the same gibberish on both
    sides, so the candidate's verdict is the reference's own judgement of that text, and every figure that compares
    it with the reference is at fp32 noise."""
    code, out, err = matrix.cli_check()
    assert code in (0, 1), out[-1500:] + err[-1500:]
    report = json.loads(out)
    assert report["error"] is None and report["candidate"]["exporter"] == "dynamo"
    check = report["checks"][0]
    verdict, own = check["verdict"], check["reference_verdict"]
    metrics = verdict["metrics"]
    # Same tokens, same judgement of them on their own: nothing the conversion did.
    assert check["output"] == check["reference_output"]
    assert verdict["kind"] == own["kind"] and verdict["kind"] not in ("WRONG", "LOSSY", "ERROR"), verdict["reason"]
    abs_tol, rel_tol = TEXT_TOLERANCES["fp32"]
    assert metrics["logits"]["max_abs"] <= abs_tol or metrics["logits"]["max_rel"] <= rel_tol
    min_top1, max_kl = SAME_PRECISION_FLOOR["fp32"]
    assert metrics["quality"]["kl"] <= max_kl and metrics["quality"]["top1"] >= min_top1
    assert max(metrics["decode"]["kl_steps"]) <= POSITION_KL["fp32"]
    # A broken-looking verdict is localized: no layer of the export leaves the reference's.
    assert metrics["where"] is None or metrics["where"]["unit"] is None, metrics["where"]
