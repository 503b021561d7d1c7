"""onnxruntime-gpu on a machine that cannot run its GPU providers: the real package from PyPI, no GPU.

This is the "silently slower" trap: a laptop or CPU Space that ran the GPU set-up, or a GPU box whose CUDA
libraries do not match the build. ``get_available_providers()`` still lists CUDA and TensorRT, and a session
asked for them quietly runs on the CPU. The arena starts each listed GPU provider once (arena.running.environment) and
must say which cannot start and why, in ONNX Runtime's own words, refuse them by name, and run "auto" on the CPU.

The wheel (255 MB, cached under .cache/) is put first on the path of the probe and of the workers, so
``import onnxruntime`` there is onnxruntime-gpu while everything else comes from .venv.
"""

from __future__ import annotations

import os

import pytest

from arena.core import Arena
from arena.running.environment import probe_environment
from arena.types import BackendSpec, TextRunRequest
from backends.onnxruntime.backend import OnnxRuntimeBackend
from backends.onnxruntime.providers import provider_summary, usable_providers
from tests.support import ROOT
from tests.support.helpers import wheel_from_pypi

VERSION = "1.31.1"  # the newest onnxruntime-gpu on PyPI when this was written (CUDA 13.0 build)
HOME = ROOT / ".cache" / "onnxruntime-gpu" / VERSION


@pytest.fixture(scope="module")
def ort_gpu_path():
    return wheel_from_pypi(f"onnxruntime-gpu=={VERSION}", HOME, "onnxruntime/capi")


@pytest.fixture(scope="module")
def gpu_package_env(ort_gpu_path):
    """Probe and workers import onnxruntime-gpu; skip where this machine can really run it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ort_gpu_path), os.environ.get("PYTHONPATH")])))
        patch.syspath_prepend(str(ort_gpu_path))  # spawned workers start with this process's sys.path
        facts = probe_environment()
        ort = facts["onnxruntime"]
        assert ort["installed"] and ort["version"] == VERSION, ort
        assert "provider_status" in ort, ort.get("provider_status_error")
        if ort["provider_status"]["CUDAExecutionProvider"]["ok"]:
            pytest.skip("this machine can run onnxruntime-gpu's CUDA provider: nothing to refuse")
        yield facts


def test_listed_gpu_providers_that_cannot_start_are_refused_with_the_reason(gpu_package_env):
    ort = gpu_package_env["onnxruntime"]
    assert {"CUDAExecutionProvider", "TensorrtExecutionProvider"} <= set(ort["providers"])
    assert ort["cuda_version"] == "13.0"
    cuda = ort["provider_status"]["CUDAExecutionProvider"]
    assert cuda["ok"] is False
    # ONNX Runtime's own reason: the provider library and the CUDA library it could not load.
    assert cuda["reason"].startswith("libonnxruntime_providers_cuda.so cannot be loaded: lib"), cuda
    assert ".so.13: cannot open shared object file" in cuda["reason"] and "CUDA 13" in cuda["reason"]
    trt = ort["provider_status"]["TensorrtExecutionProvider"]
    assert trt["ok"] is False and trt["reason"].startswith("libonnxruntime_providers_tensorrt.so cannot be loaded")

    assert "CUDAExecutionProvider (listed, but cannot start here)" in provider_summary(ort)  # Environment tab
    choices = {c.value: c.availability for c in OnnxRuntimeBackend.options(gpu_package_env)["provider"]}
    assert choices["CPUExecutionProvider"].ok and choices["auto"].ok
    sentence = choices["CUDAExecutionProvider"].sentence()
    assert sentence.startswith(f"onnxruntime-gpu {VERSION} (built for CUDA 13.0) has the CUDA provider, but it "
                               "cannot start here: libonnxruntime_providers_cuda.so cannot be loaded")
    assert f"Install: `pip install 'onnxruntime-gpu[cuda,cudnn]=={VERSION}'" in sentence
    assert "tensorrt-cu13>=10.13,<11" in choices["TensorrtExecutionProvider"].sentence()
    refused = OnnxRuntimeBackend.check_spec(BackendSpec("onnxruntime", provider="CUDAExecutionProvider"),
                                            gpu_package_env)
    assert "cannot start here" in refused
    assert OnnxRuntimeBackend.resolve_provider("auto", usable_providers(ort)) == "CPUExecutionProvider"


def test_auto_runs_on_the_cpu_and_matches_pytorch(gpu_package_env, tiny_llama, session_cache):
    arena = Arena(cache_dir=session_cache)  # fresh workers: they import onnxruntime-gpu
    try:
        result = arena.run_text_to_end(TextRunRequest(
            model=str(tiny_llama), prompt="My name is Arthur and I live in", max_new_tokens=8,
            prompt_format="plain", ignore_eos=True,
            backends=(BackendSpec("pytorch"), BackendSpec("onnxruntime"), BackendSpec(
                "onnxruntime", provider="TensorrtExecutionProvider"))))
    finally:
        arena.close()
    torch_result, ort_result, refused = result.results
    assert ort_result.error is None, ort_result.error
    assert ort_result.load.provider == "CPUExecutionProvider"
    assert any(note.startswith(f"auto: onnxruntime-gpu {VERSION}'s CUDA provider cannot start here (libonnxruntime_"
                               "providers_cuda.so cannot be loaded") for note in ort_result.load.notes), \
        ort_result.load.notes
    assert ort_result.token_ids == torch_result.token_ids
    assert refused.error.startswith("ONNX Runtime provider 'TensorrtExecutionProvider' cannot run here: "
                                    f"onnxruntime-gpu {VERSION}")


def test_tensorrt_provider_options_are_names_the_real_provider_knows(ort_gpu_path, tiny_llama, tmp_path):
    """ONNX Runtime refuses a session with an unknown provider option ('Unknown provider option: "…"'); the
    names it accepts are compiled into its TensorRT provider library."""
    import re
    from types import SimpleNamespace

    library = (ort_gpu_path / "onnxruntime" / "capi" / "libonnxruntime_providers_tensorrt.so").read_bytes()
    assert b'Unknown provider option: "' in library
    known = {m.decode() for m in re.findall(rb"trt_[a-z0-9_]+", library)}
    model = SimpleNamespace(task="text", model_dir=str(tiny_llama), context_length=128)
    ctx = SimpleNamespace(cache=SimpleNamespace(root=tmp_path))
    options = OnnxRuntimeBackend._trt_provider_options(model, BackendSpec("onnxruntime", precision="fp16"),
                                                       tmp_path / "export", ctx)
    assert set(options) - known == set()
    assert {"trt_profile_min_shapes", "trt_engine_cache_enable", "trt_fp16_enable"} <= set(options)
