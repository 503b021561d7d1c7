"""Every registered backend against the same contract, on a tiny Llama built here (Polygraphy's lesson:
a backend without a shared test drifts). GPU options are exercised where a GPU exists, else skipped."""

from __future__ import annotations

import pytest

from arena.cache import ArtifactCache, directory_fingerprint
from arena.environment import probe_environment
from arena.registry import TEXT_BACKENDS, backend_class
from arena.types import BackendSpec, PreparedText
from backends.base import GenerationSettings, LoadContext, OptionChoice

ENV = probe_environment()
CPU_SPECS = {"pytorch": BackendSpec("pytorch"),
             "onnxruntime": BackendSpec("onnxruntime", provider="CPUExecutionProvider"),
             "tensorrt": BackendSpec("tensorrt")}  # TensorRT has no CPU mode: it runs where CUDA does
CUDA_SPECS = {"pytorch": BackendSpec("pytorch", device="cuda"),
              "onnxruntime": BackendSpec("onnxruntime", provider="CUDAExecutionProvider"),
              "tensorrt": BackendSpec("tensorrt")}
GPU_ONLY = {"tensorrt"}


def skip_unless_available(name: str) -> None:
    whole = backend_class(name).availability(ENV)
    if not whole.ok:
        pytest.skip(f"{name} is not available here: {whole.sentence()}")


def prepared_for(model_dir) -> PreparedText:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer("My name is Arthur and I live in")["input_ids"]
    return PreparedText(model_dir=str(model_dir), model_name="tiny-llama", source="local", rendered_prompt="",
                        prompt_token_ids=tuple(ids), eos_token_ids=(tokenizer.eos_token_id,),
                        pad_token_id=tokenizer.pad_token_id, context_length=128,
                        fingerprint=directory_fingerprint(model_dir))


@pytest.mark.parametrize("name", sorted(TEXT_BACKENDS))
def test_options_are_well_formed_and_explain_what_is_missing(name):
    cls = backend_class(name)
    whole = cls.availability(ENV)
    assert whole.ok or name in GPU_ONLY, whole.sentence()
    options = cls.options(ENV)
    assert set(options) <= {"device", "precision", "provider"}
    for choices in options.values():
        assert choices and all(isinstance(c, OptionChoice) for c in choices)
        assert any(c.availability.ok for c in choices) or not whole.ok
        for choice in choices:
            if not choice.availability.ok:
                assert choice.availability.reason.endswith((".", ")")), choice
    if whole.ok:
        assert cls.check_spec(CPU_SPECS[name], ENV) is None
    else:  # the precise reason and the install command, never a silent absence
        problem = cls.check_spec(CPU_SPECS[name], ENV)
        assert whole.install and whole.reason in problem and f"Install: `{whole.install}`" in problem


@pytest.mark.parametrize("name", sorted(TEXT_BACKENDS))
def test_generates_greedily_and_reports_each_token(name, tiny_llama, tmp_path):
    skip_unless_available(name)
    backend = backend_class(name)()
    ctx = LoadContext(cache=ArtifactCache(tmp_path), progress=lambda *a, **k: None)
    model = prepared_for(tiny_llama)
    backend.load(model, CPU_SPECS[name], ctx)
    assert set(ctx.stage_seconds) >= {"load"}
    settings = GenerationSettings(max_new_tokens=12, eos_token_ids=model.eos_token_ids,
                                  pad_token_id=model.pad_token_id, ignore_eos=True)
    seen: list[int] = []
    ids = backend.generate_text(list(model.prompt_token_ids), settings, seen.append)
    assert ids == seen and len(ids) == 12
    assert backend.generate_text(list(model.prompt_token_ids), settings, lambda t: None) == ids
    info = backend.runtime_info()
    assert info["provider"] and info["artifact_dir"]
    backend.unload()


def test_cpu_only_machine_explains_gpu_options():
    cpu_env = {"torch": {"installed": True, "version": "2.13.0+cpu", "cuda_build": None, "cuda_available": False},
               "onnxruntime": {"installed": True, "version": "1.32.0", "providers": ["CPUExecutionProvider"]},
               "optimum_onnx": {"installed": True}}
    problem = backend_class("pytorch").check_spec(BackendSpec("pytorch", device="cuda"), cpu_env)
    assert "CPU-only build" in problem and "pip install" in problem
    problem = backend_class("onnxruntime").check_spec(
        BackendSpec("onnxruntime", provider="TensorrtExecutionProvider"), cpu_env)
    assert "no TensorRT provider" in problem and "onnxruntime-gpu" in problem
    problem = backend_class("onnxruntime").check_spec(BackendSpec("onnxruntime", precision="int8",
                                                                  provider="CUDAExecutionProvider"), cpu_env)
    assert "CUDA provider" in problem
    problem = backend_class("pytorch").check_spec(BackendSpec("pytorch", precision="fp16"), cpu_env)
    assert "fp16" in problem
    missing = {"torch": {"installed": False, "error": "ModuleNotFoundError: No module named 'torch'"},
               "onnxruntime": {"installed": False}, "optimum_onnx": {"installed": False}}
    assert "pip install torch==2.13.0" in backend_class("pytorch").check_spec(BackendSpec("pytorch"), missing)
    assert "optimum-onnx" in backend_class("onnxruntime").check_spec(BackendSpec("onnxruntime"), missing)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(TEXT_BACKENDS))
def test_cuda_generation_matches_cpu(name, tiny_llama, tmp_path):
    problem = backend_class(name).check_spec(CUDA_SPECS[name], ENV)
    if problem:
        pytest.skip(f"needs CUDA: {problem}")
    model = prepared_for(tiny_llama)
    settings = GenerationSettings(12, model.eos_token_ids, model.pad_token_id, ignore_eos=True)
    outputs = []
    reference = CPU_SPECS["pytorch"] if name in GPU_ONLY else CPU_SPECS[name]
    for spec in (reference, CUDA_SPECS[name]):
        backend = backend_class(spec.backend)()
        backend.load(model, spec, LoadContext(cache=ArtifactCache(tmp_path), progress=lambda *a, **k: None))
        outputs.append(backend.generate_text(list(model.prompt_token_ids), settings, lambda t: None))
        backend.unload()
    assert outputs[0] == outputs[1]
