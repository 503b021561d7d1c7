"""Exports made by optimum-cli keep working without optimum-onnx installed: the arena reads their layout (the
decoder's inputs, past key values and present outputs) and runs them with its own loop.

The fixture (tests/assets/optimum-cli) is a tiny random Llama and its export by optimum-onnx 0.1.0, built once by
scripts/make_optimum_fixture.py in a venv of the previous stack and shipped, as users' exports are."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.support import ROOT

FIXTURE = ROOT / "tests" / "assets" / "optimum-cli"
IDS = [1, 45, 120, 7, 300, 12, 88, 5, 230, 17, 64]


def test_optimum_is_not_installed_and_the_fixture_is_an_optimum_export():
    import importlib.util

    import onnx

    assert importlib.util.find_spec("optimum") is None  # the arena runs them without it
    graph = onnx.load(str(FIXTURE / "export" / "model.onnx"), load_external_data=False)
    names = [i.name for i in graph.graph.input]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"] and "past_key_values.1.value" in names
    assert not any(p.key == "arena.exporter" for p in graph.metadata_props)  # not one of the arena's own


def test_the_loop_runs_an_optimum_export_like_the_reference():
    """Full pass and cached decode path of the optimum export against the fp32 PyTorch model."""
    import torch
    from transformers import AutoModelForCausalLM

    from backends.loops import OrtRunner, kv_forward_logits, kv_step_logits

    model = AutoModelForCausalLM.from_pretrained(FIXTURE / "model", dtype=torch.float32).eval()
    with torch.inference_mode():
        reference = model(torch.tensor([IDS])).logits[0].numpy()
    runner = OrtRunner(str(FIXTURE / "export" / "model.onnx"))
    config = json.loads((FIXTURE / "export" / "config.json").read_text())
    assert runner.past_shapes() == {f"past_key_values.{i}.{k}": (2, 16) for i in range(2) for k in ("key", "value")}
    full = kv_forward_logits(runner, runner.input_names, config, IDS, kv_shapes=runner.past_shapes())
    np.testing.assert_allclose(full, reference, atol=1e-4)
    prompt, answer = IDS[:5], IDS[5:]
    steps = kv_step_logits(runner, runner.input_names, config, prompt, answer, kv_shapes=runner.past_shapes())
    np.testing.assert_allclose(steps, reference[4:-1], atol=1e-4)  # row k predicts answer[k]


@pytest.mark.slow
def test_check_on_an_optimum_export_matches(tmp_path):
    """`python -m arena check` with the export as the candidate: the same verdict as the reference, near-zero
    differences, and the export's own files read (no optimum anywhere)."""
    env = dict(os.environ, ARENA_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "arena", "check", "--model", str(FIXTURE / "model"), "--candidate",
                           f"onnxruntime:onnx_dir={FIXTURE / 'export'}", "--prompt", "the cat sat on the",
                           "--max-new-tokens", "12", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode in (0, 1), done.stdout[-1500:] + done.stderr[-1500:]
    report = json.loads(done.stdout)
    check = report["checks"][0]
    metrics = check["verdict"]["metrics"]
    assert check["output"] == check["reference_output"]
    assert metrics["logits"]["max_abs"] < 1e-3 and metrics["quality"]["kl"] < 1e-5
    assert "optimum" not in json.dumps(report.get("environment", {})).lower()
