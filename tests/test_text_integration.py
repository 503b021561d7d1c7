"""The whole core (preparation worker, one worker per backend, cache) on a tiny Llama built here."""

from __future__ import annotations

import os

import pytest

from arena.core import Arena
from arena.types import BackendSpec, TextRunRequest

PROMPT = "My name is Arthur and I live in"
BOTH = (BackendSpec("pytorch"), BackendSpec("onnxruntime"))


def run(arena: Arena, model, backends=BOTH, **kwargs):
    request = TextRunRequest(model=str(model), prompt=kwargs.pop("prompt", PROMPT), backends=tuple(backends),
                             max_new_tokens=kwargs.pop("max_new_tokens", 16), prompt_format="plain",
                             ignore_eos=True, **kwargs)
    return arena.run_text_to_end(request)


def test_pytorch_and_onnxruntime_agree_and_the_export_is_cached(tiny_llama, tmp_path):
    cache = tmp_path / "cache"  # its own cache, so the first export really happens here
    own = Arena(cache_dir=cache)
    try:
        first = run(own, tiny_llama)
    finally:
        own.close()
    assert first.error is None
    torch_result, ort_result = first.results
    assert torch_result.error is None and ort_result.error is None, (torch_result.error, ort_result.error)
    assert len(torch_result.token_ids) == 16
    assert torch_result.token_ids == ort_result.token_ids
    assert torch_result.text == ort_result.text and torch_result.text
    assert ort_result.load.export_cached is False and ort_result.load.export_s > 0
    assert ort_result.load.provider == "CPUExecutionProvider"
    assert torch_result.load.provider.startswith("torch")
    assert torch_result.timings.ttft_s > 0 and torch_result.timings.tokens_per_s > 0
    assert len(torch_result.timings.token_times_s) == 16
    exports = sorted((cache / "onnx").iterdir())

    # A new arena (fresh worker processes, as after an app restart) loads the export from the cache.
    fresh = Arena(cache_dir=cache)
    try:
        second = run(fresh, tiny_llama, backends=(BackendSpec("onnxruntime"),))
    finally:
        fresh.close()
    assert second.results[0].load.export_cached is True
    assert second.results[0].token_ids == ort_result.token_ids
    assert sorted((cache / "onnx").iterdir()) == exports


def test_a_users_export_directory_is_checked_against_pytorch(arena, tiny_llama):
    export_dir = run(arena, tiny_llama, backends=(BackendSpec("onnxruntime"),)).results[0].load.artifact_dir
    result = run(arena, tiny_llama, backends=(BackendSpec("pytorch"),
                                              BackendSpec("onnxruntime", onnx_dir=str(export_dir))))
    torch_result, user_result = result.results
    assert user_result.error is None and user_result.load.export_cached is None
    assert user_result.token_ids == torch_result.token_ids
    assert "user export" in user_result.spec.label


def test_a_wrong_export_directory_gets_a_clear_message(arena, tiny_llama, tmp_path):
    (tmp_path / "weights.onnx").write_text("not a graph")
    result = run(arena, tiny_llama, backends=(BackendSpec("onnxruntime", onnx_dir=str(tmp_path)),))
    assert "has no model.onnx (found weights.onnx)" in result.results[0].error


def test_int8_dynamic_quantization_runs_and_is_cached(arena, tiny_llama):
    spec = BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="int8-dynamic")
    result = run(arena, tiny_llama, backends=(spec,))
    assert result.results[0].error is None, result.results[0].error
    assert len(result.results[0].token_ids) == 16
    assert "/onnx-int8-dynamic/" in result.results[0].load.artifact_dir


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": "   "}, "The prompt is empty"),
    ({"prompt": "Arthur " * 200}, "more than the model's context of 128 tokens"),
    ({"max_new_tokens": 0}, "Max new tokens must be between 1"),
])
def test_bad_input_is_one_clear_sentence(arena, tiny_llama, kwargs, message):
    result = run(arena, tiny_llama, **kwargs)
    assert result.results == () and message in result.error


@pytest.mark.parametrize("model, message", [
    ("/no/such/model/dir", "The local directory '/no/such/model/dir' does not exist."),
    ("not a valid id!!", "is neither an existing local directory nor a valid Hugging Face hub id"),
    ("someone/model-that-is-not-cached", "The Hugging Face Hub cannot be reached and "
                                         "'someone/model-that-is-not-cached' is not in the local cache"),
])
def test_models_that_cannot_be_found_say_why(arena, model, message):
    result = run(arena, model)
    assert result.prepared is None and message in result.error


def test_a_local_folder_without_config_is_explained(arena, tmp_path):
    result = run(arena, tmp_path)
    assert "has no config.json" in result.error


def test_gpu_options_on_a_cpu_machine_fail_with_the_install_command(arena, tiny_llama):
    env = arena.environment()
    if env["torch"].get("cuda_available"):
        pytest.skip("this machine has CUDA: the CPU-only message cannot be shown here")
    result = run(arena, tiny_llama, backends=(BackendSpec("pytorch", device="cuda"), BackendSpec("pytorch")))
    cuda, cpu = result.results
    assert "CPU-only build" in cuda.error and "pip install" in cuda.error
    assert cpu.error is None and len(cpu.token_ids) == 16


def test_a_segfaulting_backend_is_an_error_result_and_the_run_goes_on(arena, tiny_llama):
    result = run(arena, tiny_llama, backends=(BackendSpec("segfaulting"), BackendSpec("pytorch")))
    crashed, healthy = result.results
    assert "was killed by SIGSEGV during 'run_text'" in crashed.error
    assert "segfaulting backend: generating" in crashed.log_tail
    assert healthy.error is None and len(healthy.token_ids) == 16
    again = run(arena, tiny_llama, backends=(BackendSpec("segfaulting"),))
    assert "SIGSEGV" in again.results[0].error  # a fresh worker was started and crashed again, cleanly


def test_a_run_abandoned_half_way_does_not_block_the_next(arena, tiny_llama):
    request = TextRunRequest(model=str(tiny_llama), prompt=PROMPT, backends=BOTH, max_new_tokens=4,
                             prompt_format="plain")
    steps = arena.run_text(request)
    next(steps)  # prepared
    next(steps)  # first backend done; the client goes away here
    del steps
    result = run(arena, tiny_llama, backends=(BackendSpec("onnxruntime"),), max_new_tokens=4)
    assert result.results[0].error is None and len(result.results[0].token_ids) == 4


def test_a_backend_this_machine_lacks_is_an_error_with_the_fix(arena, tiny_llama):
    """TensorRT (or any GPU option) on a machine without it: the reason and the install command, per panel."""
    trt = arena._backend_cls("tensorrt").availability(arena.environment())
    if trt.ok:
        pytest.skip("TensorRT is available here")
    result = run(arena, tiny_llama, backends=(BackendSpec("tensorrt"), BackendSpec("pytorch")))
    missing, reference = result.results
    assert missing.error.startswith("TensorRT is not available here: ") and trt.reason in missing.error
    assert f"Install: `{trt.install}`" in missing.error and trt.install.startswith(("pip install", "bash scripts/"))
    assert reference.error is None and reference.token_ids  # the other backends still run


def test_every_backend_is_teacher_forced_against_the_reference(arena, tiny_llama):
    result = run(arena, tiny_llama)
    torch_result, ort_result = result.results
    assert len(result.prepared.quality_token_ids) > 1 and result.prepared.parameters > 0
    reference = torch_result.verdict.metrics["quality"]
    assert reference["kl"] == 0.0 and reference["top1"] == 1.0 and reference["ppl_ratio"] == 1.0
    # The prompt + the reference's 16 tokens, and the paragraph cut to the tiny model's 128-token context.
    assert reference["positions"] == 16 + min(len(result.prepared.quality_token_ids), 128) - 1
    quality = ort_result.verdict.metrics["quality"]
    assert set(quality["sequences"]) == {"output", "paragraph"} and quality["positions"] == reference["positions"]
    assert quality["top1"] == 1.0 and quality["kl"] < 1e-6 and abs(quality["ppl_ratio"] - 1) < 1e-4
    assert ort_result.verdict.metrics["precision"] == "fp32"  # (the random tiny model's text may read as gibberish)


@pytest.mark.parametrize(("made_as", "read_as", "note"), [
    ("int8-dynamic", "int8", "user export: int8 dynamic quantization (MatMulInteger"),
    ("int8", "int8", "user export: int8 weight-only (MatMulNBits, 8 bits"),
    ("int4", "int4", "user export: int4 weight-only (MatMulNBits, 4 bits"),
])
def test_a_users_export_is_judged_at_the_precision_its_graph_has(arena, tiny_llama, made_as, read_as, note):
    spec = BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision=made_as)
    quantized_dir = run(arena, tiny_llama, backends=(spec,)).results[0].load.artifact_dir
    result = run(arena, tiny_llama, backends=(BackendSpec("pytorch"),
                                              BackendSpec("onnxruntime", onnx_dir=quantized_dir)))
    user = result.results[1]
    assert user.load.precision == read_as and user.verdict.metrics["precision"] == read_as
    assert any(n.startswith(note) for n in user.load.notes), user.load.notes
    assert user.verdict.metrics["quality"]["positions"] > 16


def test_a_candidate_whose_reference_failed_is_not_compared(arena, tiny_llama):
    result = run(arena, tiny_llama, backends=(BackendSpec("segfaulting"), BackendSpec("pytorch")), reference="0")
    crashed, healthy = result.results
    assert crashed.verdict.kind == "ERROR" and "quality" not in healthy.verdict.metrics
    # The random tiny model may read as gibberish on its own; compared with nothing, it is never a MATCH.
    assert healthy.verdict.kind == "NOT COMPARED" or healthy.verdict.kind == "GIBBERISH", healthy.verdict
    if healthy.verdict.kind == "NOT COMPARED":
        assert "the reference failed (ERROR: " in healthy.verdict.reason and not healthy.verdict.broken


def test_a_repeated_run_reuses_its_judging_figures_until_a_model_changes(arena, tiny_llama, tmp_path):
    """Judging figures are kept per (candidate's model, reference's model, token ids): the same run again reuses
    the answer's and the paragraph's teacher-forced figures, the decode path and the perplexity, to the same
    values; an export edited in place (a file's time changes) is judged afresh."""
    import os
    import shutil

    first = run(arena, tiny_llama, prompt="The memo keeps", max_new_tokens=8)
    machine = [r["machine_load"] for r in first.to_dict()["results"]]  # what the machine did while each ran
    assert all(m["seconds"] > 0 and isinstance(m["busy"], bool) for m in machine), machine
    export = tmp_path / "export"
    shutil.copytree(first.results[1].load.artifact_dir, export)
    backends = (BackendSpec("pytorch"), BackendSpec.from_any({"backend": "onnxruntime", "onnx_dir": str(export)}))
    fresh = run(arena, tiny_llama, backends=backends, prompt="The memo keeps", max_new_tokens=8)
    again = run(arena, tiny_llama, backends=backends, prompt="The memo keeps", max_new_tokens=8)
    before, after = (r.results[1].verdict.metrics for r in (fresh, again))
    assert "reused" not in before["quality"] and after["quality"]["reused"] == ["output", "paragraph"]
    assert {k: v for k, v in after["quality"].items() if k not in ("reused", "seconds")} == \
        {k: v for k, v in before["quality"].items() if k != "seconds"}
    assert after["decode"]["reused"] is True and after["decode"]["kl_steps"] == before["decode"]["kl_steps"]
    assert after["signals"]["nll"] == before["signals"]["nll"] is not None
    from arena.judging.verdicts import quality_sentence  # (the random tiny model's text reads as gibberish)

    assert "kept from an earlier run of the same two models" in quality_sentence(after["quality"])
    model = export / "model.onnx"
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 1_000_000_000))
    edited = run(arena, tiny_llama, backends=backends, prompt="The memo keeps", max_new_tokens=8)
    assert "reused" not in edited.results[1].verdict.metrics["quality"]
    assert "reused" not in edited.results[1].verdict.metrics["decode"]


def test_a_check_of_several_candidates_computes_the_references_distributions_once(arena, tiny_llama, session_cache,
                                                                                   tmp_path):
    """`python -m arena check` keeps the reference's teacher-forced distributions between its candidates: a second
    candidate (another copy of the export: nothing of its own is kept) is judged on the files of the first one's
    run, to the figures the first one got (the two copies are the same model); forgetting them (as closing the
    arena does) removes them."""
    import shutil

    from arena.judging.check import check

    export = run(arena, tiny_llama, backends=(BackendSpec("onnxruntime"),)).results[0].load.artifact_dir
    copies = [shutil.copytree(export, tmp_path / name) for name in ("a", "b")]
    phases: list[str] = []

    def judged(copy, **kwargs):
        return check(arena, str(tiny_llama), BackendSpec("onnxruntime", onnx_dir=str(copy)), prompts=(PROMPT,),
                     max_new_tokens=8, **kwargs)["checks"][0]["verdict"]["metrics"]

    arena.keep_reference_distributions = True
    try:
        fresh = judged(copies[0], progress=lambda _f, description: phases.append(description))
        second = judged(copies[1], progress=lambda _f, description: phases.append(description))
        folders = list((session_cache / "judging").glob(f".tmp-judging-kept-{os.getpid()}-*"))
        assert len(folders) == 1 and len(list(folders[0].iterdir())) == 2  # the answer's and the paragraph's
    finally:
        arena.keep_reference_distributions = False
        arena.forget_reference_distributions()
    assert not folders[0].exists()
    # once, for the first candidate (its answer and the paragraph; the decode path's tokens are the same answer's)
    assert sum("teacher-forced reference distributions" in p for p in phases) == 1, phases
    assert "reused" not in second["quality"] and "reused" not in second["decode"]  # the candidate's own, afresh
    assert {k: v for k, v in second["quality"].items() if k != "seconds"} == \
        {k: v for k, v in fresh["quality"].items() if k != "seconds"}
    assert {k: v for k, v in second["decode"].items() if k != "seconds"} == \
        {k: v for k, v in fresh["decode"].items() if k != "seconds"}
