"""The quantized and compiled options, through the whole core (workers, cache, verdicts): ONNX Runtime weight-only
int8/int4 and dynamic int8, PyTorch weight-only int8 (torchao) and torch.compile, on the tiny Llama and once, with
few tokens, on the embedded default model; the image request for a quantized ONNX model is one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from arena.preparing.catalog import DEFAULT_TEXT_MODEL
from arena.types import BackendSpec, ImageRunRequest, TextRunRequest
from backends.onnxruntime.options import IMAGE_QUANTIZATION_REFUSAL

PROMPT = "My name is Arthur and I live in"
CPU = "CPUExecutionProvider"
NEW = (
    BackendSpec("onnxruntime", provider=CPU, precision="int8"),
    BackendSpec("onnxruntime", provider=CPU, precision="int4"),
    BackendSpec("onnxruntime", provider=CPU, precision="int8-dynamic"),
    BackendSpec("pytorch", precision="int8"),
)


def run(arena, model, backends, new_tokens=16, prompt=PROMPT, prompt_format="plain"):
    return arena.run_text_to_end(TextRunRequest(model=str(model), prompt=prompt, backends=tuple(backends),
                                                max_new_tokens=new_tokens, prompt_format=prompt_format,
                                                ignore_eos=True))


# On the trained default model these lose too much when teacher-forced (measured: dynamic int8 ~56 % top-1,
# KL 0.73; int4 with the default settings ~57 %): LOSSY is their right verdict, the quiet failure the arena catches.
LOSSY_ON_THE_DEFAULT_MODEL = {"int4", "int8-dynamic"}


def check_judged(result, new_tokens, sensible=False):
    """Every backend ran and got a verdict; with ``sensible`` (a trained model) the fair ones are not broken and
    the lossy ones are LOSSY (with their figures), never a crash. The tiny Llama has random weights: its reference
    itself is gibberish, so there the verdict only has to exist."""
    assert result.error is None, result.error
    for r in result.results:
        assert r.error is None, (r.spec.label, r.error)
        assert len(r.token_ids) == new_tokens and r.verdict is not None, r.spec.label
        if sensible and r.spec.precision in LOSSY_ON_THE_DEFAULT_MODEL and r.verdict.broken:
            assert r.verdict.kind == "LOSSY" and "top-1" in r.verdict.reason, (r.spec.label, r.verdict)
        elif sensible:
            assert r.verdict.kind in ("MATCH", "DRIFT") and not r.verdict.broken, (r.spec.label, r.verdict)


def test_every_new_precision_runs_and_is_judged_on_the_tiny_model(arena, tiny_llama):
    result = run(arena, tiny_llama, (BackendSpec("pytorch"), *NEW))
    check_judged(result, 16)
    by_label = {r.spec.label: r for r in result.results}
    int8 = by_label["ONNX Runtime · CPU · int8"]
    assert "/onnx-int8/" in int8.load.artifact_dir and "weight-only 8-bit MatMulNBits" in "; ".join(int8.load.notes)
    assert "/onnx-int4/" in by_label["ONNX Runtime · CPU · int4"].load.artifact_dir
    assert "/onnx-int8-dynamic/" in by_label["ONNX Runtime · CPU · int8-dynamic"].load.artifact_dir
    assert "torchao" in "; ".join(by_label["PyTorch · cpu · int8"].load.notes)


def test_weight_only_quantization_is_cached_per_source_and_settings(arena, tiny_llama):
    import json

    spec = BackendSpec("onnxruntime", provider=CPU, precision="int8", block_size="64", embedding_bits="fp32",
                       graph_optimization="basic", threads="1")
    assert spec.label == "ONNX Runtime · CPU · int8 · block 64 · embedding fp32 · graph opt basic · 1 threads"
    first = run(arena, tiny_llama, (spec,), new_tokens=4).results[0]
    again = run(arena, tiny_llama, (spec.replace(symmetric=False),), new_tokens=4).results[0]
    assert first.error is None and again.error is None, (first.error, again.error)
    assert first.load.artifact_dir != again.load.artifact_dir and first.load.threads == 1
    manifest = json.loads((Path(first.load.artifact_dir) / "manifest.json").read_text())
    assert manifest["fields"]["block_size"] == 64 and manifest["fields"]["embedding_bits"] == 0
    assert manifest["quantized"]["MatMulNBits"] > 0 and manifest["quantized"]["output_projection"] == []
    default = run(arena, tiny_llama, (BackendSpec("onnxruntime", provider=CPU, precision="int8"),),
                  new_tokens=4).results[0]
    assert json.loads((Path(default.load.artifact_dir) / "manifest.json").read_text())["fields"]["source"] \
        == json.loads((Path(first.load.artifact_dir) / "manifest.json").read_text())["fields"]["source"]


@pytest.mark.slow  # inductor compiles the decoding step: minutes on a shared 2-core machine
def test_torch_compile_matches_eager_and_reports_its_compile_time(arena, tiny_llama):
    result = run(arena, tiny_llama, (BackendSpec("pytorch"), BackendSpec("pytorch", compile=True)))
    check_judged(result, 16)
    eager, compiled = result.results
    assert compiled.spec.label == "PyTorch · cpu · fp32 · compiled"
    assert compiled.load.compile_s > 0 and "static KV cache" in "; ".join(compiled.load.notes)
    assert compiled.token_ids == eager.token_ids


@pytest.mark.slow
def test_every_new_precision_on_the_default_model(arena):
    result = run(arena, DEFAULT_TEXT_MODEL, (BackendSpec("pytorch"), *NEW), new_tokens=4,
                 prompt="What is the capital of France?", prompt_format="chat")
    check_judged(result, 4, sensible=True)


def test_an_image_request_for_a_quantized_onnx_model_is_one_sentence(arena, tiny_sd):
    result = arena.run_image_to_end(ImageRunRequest(model=str(tiny_sd), prompt="a red square", steps=2,
                                                    backends=(BackendSpec("onnxruntime", provider=CPU,
                                                                          precision="int8"),)))
    error = result.results[0].error
    assert error == IMAGE_QUANTIZATION_REFUSAL.format(precision="int8"), error
    assert error.count(". ") == 0 and error.endswith(".")


@pytest.mark.parametrize("facts, expected", [
    ({"bf16_native": True, "known": True}, None),
    ({"bf16_native": False, "known": True}, "no native bf16"),
])
def test_bf16_on_a_cpu_without_native_bf16_is_said(facts, expected):
    from backends.torch_backend import PyTorchBackend

    note = PyTorchBackend.bf16_note(facts)
    assert note is None if expected is None else expected in note
