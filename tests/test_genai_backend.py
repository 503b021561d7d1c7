"""ONNX Runtime GenAI on the session's tiny Llama: the real model builder (in its isolated process, cached), the real
runtime's Generator loop, compared with PyTorch on the same prepared ids; a user's folder; the public-mode gate.

The shared contract (greedy ids and first-step logits against transformers, unload, options) is
tests/test_backend_contract.py::TestOnnxRuntimeGenAI; here is what is particular to this backend. One fp32 build
(shared with the contract class through the session cache) and one int4 build keep it to seconds.
"""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from arena.errors import ArenaError
from arena.preparing.cache import ArtifactCache
from arena.registry import backend_class, resolve_alias
from arena.running.host import load_context
from arena.types import BackendSpec
from backends.contract import GenerationSettings
from tests.support.backend_contract import NEW_TOKENS, prepared_text

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime_genai") is None,
                                reason="onnxruntime-genai is not installed: pip install onnxruntime-genai==0.18.0")


def load(spec: BackendSpec, model, cache_dir):
    backend = backend_class(spec.backend)()
    ctx = load_context(ArtifactCache(cache_dir), lambda *a, **k: None)
    backend.load(model, spec, ctx)
    return backend, ctx


def settings_for(model, ignore_eos: bool = True, eos: tuple[int, ...] | None = None) -> GenerationSettings:
    return GenerationSettings(NEW_TOKENS, model.eos_token_ids if eos is None else eos, model.pad_token_id,
                              ignore_eos=ignore_eos)


@pytest.fixture(scope="module")
def model(tiny_llama):
    return prepared_text(tiny_llama)


@pytest.fixture(scope="module")
def pytorch_run(model, session_cache):
    """PyTorch fp32's greedy ids and prompt logits on the same prepared ids (the arena's own PyTorch backend)."""
    backend, _ = load(BackendSpec("pytorch"), model, session_cache)
    try:
        ids = backend.generate_text(list(model.prompt_token_ids), settings_for(model), lambda t: None)
        logits = backend.forward_logits(list(model.prompt_token_ids))
    finally:
        backend.unload()
    return ids, logits


@pytest.fixture(scope="module")
def genai_fp32(model, session_cache):
    backend, ctx = load(BackendSpec("onnxruntime-genai", precision="fp32"), model, session_cache)
    yield backend, ctx
    backend.unload()


@pytest.fixture(scope="module")
def genai_int4(model, session_cache):
    """int4 with settings away from the defaults, to see them reach the builder (block 16, asymmetric)."""
    spec = BackendSpec("onnxruntime-genai", precision="int4", block_size="16", symmetric=False)
    backend, ctx = load(spec, model, session_cache)
    yield backend, ctx, spec
    backend.unload()


def test_fp32_build_generates_exactly_what_pytorch_does(genai_fp32, pytorch_run, model, session_cache):
    backend, ctx = genai_fp32
    seen: list[int] = []
    ids = backend.generate_text(list(model.prompt_token_ids), settings_for(model), seen.append)
    assert ids == seen == pytorch_run[0] and len(ids) == NEW_TOKENS
    np.testing.assert_allclose(backend.forward_logits(list(model.prompt_token_ids)), pytorch_run[1], atol=1e-3,
                               rtol=0)
    info = backend.runtime_info()
    assert info["precision"] == "fp32" and info["builder"]["precision"] == "fp32"
    assert "onnxruntime-genai" in info["provider"] and (info["artifact_dir"] + "/genai_config.json")
    # the panel says how it was built, as a command to reproduce it
    assert any("onnxruntime_genai.models.builder" in note and "-p fp32 -e cpu" in note for note in ctx.notes)
    assert "export" in ctx.stage_seconds and "load" in ctx.stage_seconds
    again, ctx2 = load(BackendSpec("onnxruntime-genai", precision="fp32"), model, session_cache)
    try:  # the second load finds the build in the cache
        assert again.runtime_info()["export_cached"] is True
        assert again.runtime_info()["artifact_dir"] == info["artifact_dir"]
        assert any("cached build" in note for note in ctx2.notes)
    finally:
        again.unload()


def test_its_cached_decode_gives_the_full_pass_logits_step_by_step(genai_fp32, pytorch_run, model):
    """The decode path the judge measures: GenAI's own generator, the prompt then each answer token appended."""
    backend, _ctx = genai_fp32
    prompt, answer = list(model.prompt_token_ids), list(pytorch_run[0][:6])
    cached = backend.cached_step_logits(prompt, answer)
    full = backend.forward_logits(prompt + answer)[len(prompt) - 1:-1]
    assert cached.shape == full.shape == (len(answer), full.shape[1])
    np.testing.assert_allclose(cached, full, atol=1e-3)


def test_eos_stops_generation_unless_ignored(genai_fp32, pytorch_run, model):
    backend, _ = genai_fp32
    reference = pytorch_run[0]
    stop = reference[3]
    ids = backend.generate_text(list(model.prompt_token_ids), settings_for(model, ignore_eos=False, eos=(stop,)),
                                lambda t: None)
    assert ids == reference[:reference.index(stop) + 1]


def test_int4_build_uses_the_builders_settings_and_stays_close(genai_int4, pytorch_run, model):
    import onnx

    from backends.onnxruntime_genai.precision import decoder_path

    backend, ctx, spec = genai_int4
    info = backend.runtime_info()
    assert info["precision"] == "int4" and info["builder"] == {
        "precision": "int4", "execution_provider": "cpu", "block_size": 16, "accuracy_level": 4, "symmetric": False}
    graph = onnx.load(str(decoder_path(backend_folder(backend))), load_external_data=False).graph
    nbits = [{a.name: a.i for a in n.attribute} for n in graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all(a["bits"] == 4 and a["block_size"] == 16 for a in nbits)
    # asymmetric: the builder adds zero points (a fourth input) to every MatMulNBits
    assert all(len(n.input) >= 4 and n.input[3] for n in graph.node if n.op_type == "MatMulNBits")
    assert any("block size 16" in note and "asymmetric" in note for note in ctx.notes)
    cls = backend_class("onnxruntime-genai")
    assert cls.label(spec.options) == "ONNX Runtime GenAI · int4 · block 16 · asymmetric"
    assert cls.tolerance_class(cls.judged_precision(spec.options)) == "int4"
    ids = backend.generate_text(list(model.prompt_token_ids), settings_for(model), lambda t: None)
    assert len(ids) == NEW_TOKENS and ids[0] == pytorch_run[0][0]  # 4-bit weights: the first step still agrees
    logits = backend.forward_logits(list(model.prompt_token_ids))
    assert logits.shape == pytorch_run[1].shape
    assert np.corrcoef(logits.ravel(), pytorch_run[1].ravel())[0, 1] > 0.9
    assert not np.allclose(logits, pytorch_run[1], atol=1e-3)  # really quantized


def backend_folder(backend):
    from pathlib import Path

    return Path(backend.runtime_info()["artifact_dir"])


def test_a_users_genai_folder_runs_as_it_is(genai_fp32, genai_int4, pytorch_run, model, session_cache, tmp_path):
    users = tmp_path / "my-genai-model"
    shutil.copytree(backend_folder(genai_fp32[0]), users, ignore=shutil.ignore_patterns("arena-manifest*"))
    spec = BackendSpec("onnxruntime-genai", genai_dir=str(users / "genai_config.json"))  # the file names its folder
    backend, ctx = load(spec, model, session_cache)
    try:
        info = backend.runtime_info()
        assert info["artifact_dir"] == str(users.resolve()) and info["export_cached"] is None
        assert info["precision"] == "fp32" and "builder" not in info
        assert any("user GenAI model folder" in note for note in ctx.notes) and "export" not in ctx.stage_seconds
        assert backend.generate_text(list(model.prompt_token_ids), settings_for(model), lambda t: None) == \
            pytorch_run[0]
    finally:
        backend.unload()
    assert backend_class("onnxruntime-genai").label(spec.options) == "ONNX Runtime GenAI · user model"
    # a quantized user folder is judged at what its graph says
    quantized, _ = load(BackendSpec("onnxruntime-genai", genai_dir=str(backend_folder(genai_int4[0]))), model,
                        session_cache)
    try:
        assert quantized.runtime_info()["precision"] == "int4"
    finally:
        quantized.unload()


def test_a_folder_that_is_no_genai_model_is_refused_with_the_reason(model, session_cache, tmp_path, tiny_llama):
    with pytest.raises(ArenaError, match="does not exist"):
        load(BackendSpec("onnxruntime-genai", genai_dir=str(tmp_path / "missing")), model, session_cache)
    with pytest.raises(ArenaError, match="no genai_config.json"):  # a Hugging Face folder is not a GenAI one
        load(BackendSpec("onnxruntime-genai", genai_dir=str(tiny_llama)), model, session_cache)


def test_public_mode_refuses_the_folder_option_but_not_the_build():
    from arena.public.policy import Policy

    public = Policy(public=True)
    problem = public.refuse_spec(BackendSpec("onnxruntime-genai", genai_dir="/srv/models/phi3-genai"))
    assert problem and "genai_dir" in problem
    assert public.refuse_spec(BackendSpec("onnxruntime-genai", precision="int4")) is None


def test_names_and_unavailability():
    for alias in ("genai", "ORT-GenAI", "onnxruntime_genai"):
        assert resolve_alias(alias) == "onnxruntime-genai"
    cls = backend_class("onnxruntime-genai")
    assert [cls.tolerance_class(p) for p in ("int4", "int8", "fp32")] == ["int4", "int8", "fp32"]
    missing = cls.check_spec(BackendSpec("onnxruntime-genai"), {"onnxruntime_genai": {"installed": False}})
    assert "pip install onnxruntime-genai==" in missing
    with pytest.raises(ValueError, match="choose one of: fp32, int8, int4"):
        BackendSpec("onnxruntime-genai", precision="fp16")


def test_an_int8_build_keeps_the_tied_embedding_apart():
    """The builder's int8 with a tied embedding wrote an invalid model (a 4-bit-only Gather); int8 asks for the
    embedding and the output projection apart, and the cache key carries the options (no stale invalid build)."""
    from backends.conversion.genai_build import GenAIBuildSettings

    assert "shared_embeddings=false" in GenAIBuildSettings(precision="int8").extra_options()
    assert "shared_embeddings=false" not in GenAIBuildSettings(precision="int4").extra_options()
    assert GenAIBuildSettings(precision="fp32").extra_options() == []
