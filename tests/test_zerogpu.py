"""ZeroGPU mode (arena/running/zerogpu.py): the switch, the duration a call asks for, what is available there and
why not, the @spaces.GPU path run through the spaces package's own off-ZeroGPU behaviour, and the app started with
ZeroGPU's variables set.

No GPU and no ZeroGPU here: the decorated path is run where spaces.GPU returns the function itself (off ZeroGPU,
spaces/zero/decorator.py), on the CPU; nothing here claims a GPU result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from arena.registry import all_backends
from arena.running import zerogpu
from arena.types import BackendSpec, ImageRunRequest, PreparedText, TextRunRequest
from tests.support import ROOT

ON = {"SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": "http://127.0.0.1:9"}
ZERO_GPUS = [{"name": "NVIDIA RTX PRO 6000 Blackwell Server Edition", "capability": "12.0", "memory_gb": 95.0}]


# --- the switch ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, on", [("true", True), ("True", True), ("1", True), ("t", True), ("false", False),
                                       ("0", False), ("", False), (None, False), ("yes", False)])
def test_the_mode_follows_the_variable_the_spaces_package_reads(value, on):
    """spaces/config.py: SPACES_ZERO_GPU is true when it is one of 1, t, true (any case); "yes" is not."""
    assert zerogpu.active({} if value is None else {"SPACES_ZERO_GPU": value}) is on


def test_facts_say_the_mode_and_import_nothing_heavy():
    code = ("import sys; from arena.running import zerogpu; f = zerogpu.facts(); "
            "print(f['active'], 'torch' in sys.modules, 'spaces' in sys.modules)")
    env = dict(os.environ, **ON)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "False", "False"]
    assert zerogpu.facts({})["active"] is False


def test_the_cap_can_be_changed_by_the_operator():
    assert zerogpu.max_duration_s({}) == zerogpu.DEFAULT_MAX_DURATION_S
    assert zerogpu.max_duration_s({"ARENA_ZEROGPU_MAX_DURATION_S": "60"}) == 60
    assert zerogpu.max_duration_s({"ARENA_ZEROGPU_MAX_DURATION_S": "1"}) == zerogpu.MIN_DURATION_S
    assert zerogpu.max_duration_s({"ARENA_ZEROGPU_MAX_DURATION_S": "soon"}) == zerogpu.DEFAULT_MAX_DURATION_S


# --- the duration estimate -------------------------------------------------------------------------------------
def prepared(parameters: int | None) -> PreparedText:
    return PreparedText(model_dir="/m", model_name="m", source="local", rendered_prompt="", prompt_token_ids=(1, 2),
                        eos_token_ids=(0,), pad_token_id=0, context_length=128, fingerprint="f",
                        parameters=parameters)


def text_call(parameters: int | None, **request) -> tuple:
    return (prepared(parameters), BackendSpec("pytorch", device="cuda"), TextRunRequest(prompt="Hi", **request))


def test_the_duration_grows_with_the_request_and_the_model_and_stays_within_the_cap():
    small = zerogpu.estimate_duration("run_text", text_call(135_000_000), cap=120)
    assert zerogpu.MIN_DURATION_S <= small < zerogpu.DEFAULT_SCHEDULE_S  # the default run asks for less than 60 s
    longer = zerogpu.estimate_duration("run_text", text_call(135_000_000, max_new_tokens=256, repeats=3), cap=120)
    bigger = zerogpu.estimate_duration("run_text", text_call(1_500_000_000), cap=120)
    assert small < longer and small < bigger
    unknown = zerogpu.estimate_duration("run_text", text_call(None), cap=120)
    assert unknown == bigger  # an unknown size counts as the public size cap
    assert zerogpu.estimate_duration("run_text", text_call(1_500_000_000, max_new_tokens=256, repeats=3, warmup=2),
                                     cap=120) == 120
    assert zerogpu.estimate_duration("run_text", text_call(1_500_000_000, max_new_tokens=256, repeats=3, warmup=2),
                                     cap=90) == 90
    tiny = zerogpu.estimate_duration("run_text", text_call(1000, max_new_tokens=1, warmup=0), cap=120)
    assert tiny == zerogpu.MIN_DURATION_S


def test_the_duration_of_an_image_call_follows_its_steps():
    few = zerogpu.estimate_duration("run_image", (None, None, ImageRunRequest(prompt="a", steps=5)), cap=300)
    many = zerogpu.estimate_duration("run_image", (None, None, ImageRunRequest(prompt="a", steps=50)), cap=300)
    assert zerogpu.MIN_DURATION_S <= few < many <= 300


def test_the_duration_callable_takes_the_decorated_functions_arguments():
    """spaces calls duration(*args, **kwargs) with the decorated function's own arguments."""
    args = text_call(135_000_000)
    assert zerogpu._duration("backends.torch_backend:PyTorchBackend", "/cache", "run_text", args, {}) == \
        zerogpu.estimate_duration("run_text", args)


# --- what runs on ZeroGPU --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def probed() -> dict:
    from arena.running.environment import probe_environment

    env = probe_environment()
    assert "probe_error" not in env, env
    assert env["zerogpu"]["active"] is False  # this machine is no ZeroGPU Space
    return env


def on_zerogpu(env: dict, cuda_build: str | None, spaces: str | None = "0.51.3") -> dict:
    torch = dict(env["torch"], cuda_build=cuda_build, cuda_available=False, devices=[], bf16_cuda=False)
    return {**env, "torch": torch, "zerogpu": {"active": True, "spaces": spaces, "gpus": ZERO_GPUS,
                                               "max_duration_s": 120}}


def restricted(env: dict) -> dict:
    backends = all_backends()
    return {name: zerogpu.restrict(cls, {"title": cls.title, "availability": cls.availability(env),
                                         "options": cls.options(env)}, env) for name, cls in backends.items()}


def choice(info: dict, option: str, value: str):
    return next(c for c in info["options"][option] if c.value == value)


def test_off_zerogpu_nothing_changes(probed):
    for cls in all_backends().values():
        info = {"availability": cls.availability(probed), "options": cls.options(probed)}
        assert zerogpu.restrict(cls, info, probed) is info
    spec = BackendSpec("onnxruntime", provider="CUDAExecutionProvider")
    cls = all_backends()["onnxruntime"]
    assert zerogpu.check_spec(cls, spec, probed, "text") == cls.check_spec(spec, probed, "text")


def test_on_zerogpu_with_this_cpu_torch_the_gpu_choices_say_why(probed):
    env = on_zerogpu(probed, cuda_build=None)
    info = restricted(env)
    cuda = choice(info["pytorch"], "device", "cuda")
    assert not cuda.availability.ok and "CPU-only build" in cuda.availability.reason
    assert "requirements-zerogpu.txt" in cuda.availability.install
    assert cuda.label.endswith("(ZeroGPU, per call)")
    assert choice(info["pytorch"], "device", "cpu").availability.ok  # the CPU backends run as everywhere
    assert choice(info["pytorch"], "precision", "fp32").availability.ok
    assert not choice(info["pytorch"], "precision", "fp16").availability.ok
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        why = choice(info["onnxruntime"], "provider", provider).availability
        assert not why.ok and "@spaces.GPU" in why.reason and "ONNX Runtime" in why.reason
    assert choice(info["onnxruntime"], "provider", "CPUExecutionProvider").availability.ok
    assert not choice(info["onnxruntime"], "precision", "fp16").availability.ok
    assert choice(info["onnxruntime"], "precision", "int8").availability.ok
    trt = info["tensorrt"]["availability"]  # its own check: no tensorrt here, and no GPU outside a decorated call
    assert not trt.ok and "TensorRT" in trt.reason


def test_on_zerogpu_with_a_cuda_torch_pytorch_cuda_runs_through_the_decorated_path(probed, monkeypatch):
    monkeypatch.setattr(zerogpu, "_install_error", None)
    env = on_zerogpu(probed, cuda_build="13.0")
    info = restricted(env)
    assert choice(info["pytorch"], "device", "cuda").availability.ok
    assert choice(info["pytorch"], "precision", "fp16").availability.ok
    torch_cls = all_backends()["pytorch"]
    # Checked against the GPU a decorated call gets (bf16 on compute capability 12.0), not the probe's "no GPU".
    assert zerogpu.check_spec(torch_cls, BackendSpec("pytorch", device="cuda", precision="bf16"), env, "text") is None
    assert zerogpu.check_spec(torch_cls, BackendSpec("pytorch", device="cuda"), env, "text") is None
    assert "fp16 needs device 'cuda'" in zerogpu.check_spec(torch_cls, BackendSpec("pytorch", precision="fp16"), env,
                                                             "text")
    ort = all_backends()["onnxruntime"]
    refused = zerogpu.check_spec(ort, BackendSpec("onnxruntime", provider="CUDAExecutionProvider"), env, "text")
    assert refused.startswith("ONNX Runtime provider 'CUDAExecutionProvider' cannot run here:")
    assert "@spaces.GPU" in refused
    assert zerogpu.routed(torch_cls, {"device": "cuda"}, env)
    assert not zerogpu.routed(torch_cls, {"device": "cpu"}, env)
    assert not zerogpu.routed(ort, {"provider": "CUDAExecutionProvider"}, env)
    # No spaces package, or a path that could not be set up: unavailable, with the reason.
    missing = choice(restricted(on_zerogpu(probed, cuda_build="13.0", spaces=None))["pytorch"], "device", "cuda")
    assert not missing.availability.ok and "spaces package is not installed" in missing.availability.reason
    monkeypatch.setattr(zerogpu, "_install_error", "RuntimeError: boom")
    broken = choice(restricted(env)["pytorch"], "device", "cuda")
    assert not broken.availability.ok and "boom" in broken.availability.reason


def test_the_core_routes_pytorch_cuda_to_the_decorated_path_and_the_rest_to_workers(probed, tmp_path, monkeypatch):
    from arena.core import Arena
    from arena.running.workers import Hosted

    monkeypatch.setattr(zerogpu, "_install_error", None)
    core = Arena(cache_dir=tmp_path, environment=on_zerogpu(probed, cuda_build="13.0"))
    try:
        assert isinstance(core._backend_worker(BackendSpec("pytorch", device="cuda")), zerogpu.GPUHost)
        assert isinstance(core._backend_worker(BackendSpec("pytorch")), Hosted)
        assert isinstance(core._backend_worker(BackendSpec("onnxruntime")), Hosted)
        options = core.backend_options()
        assert choice(options["pytorch"], "device", "cuda").availability.ok
        assert not options["tensorrt"]["availability"].ok
        assert core.worker_pids() == {"pytorch-cpu": None, "onnxruntime": None}  # nothing started
    finally:
        core.close()
    core = Arena(cache_dir=tmp_path, environment=probed)  # off ZeroGPU: the worker, as always
    try:
        assert isinstance(core._backend_worker(BackendSpec("pytorch", device="cuda")), Hosted)
    finally:
        core.close()


# --- the decorated path ----------------------------------------------------------------------------------------
def test_a_refusal_from_zerogpu_becomes_the_backends_error(monkeypatch):
    """What a visitor sees when the quota runs out: spaces raises gr.Error("...quota...", title=...); the panel
    gets the sentence, and the run goes on with the other backends (a WorkerFailed, as a failed worker call)."""
    from arena.running.workers import RunStopped, WorkerFailed

    class QuotaError(Exception):
        title = "ZeroGPU quota exceeded"
        message = "You have exceeded your free ZeroGPU quota (60s requested vs. 12s left). Try again in 13:45:00."

    def refuse(*args):
        raise QuotaError()

    monkeypatch.setattr(zerogpu, "_decorated", refuse)
    host = zerogpu.GPUHost("backends.torch_backend:PyTorchBackend", "/cache")
    seen = []
    with pytest.raises(WorkerFailed, match=r"^ZeroGPU \(ZeroGPU quota exceeded\): You have exceeded"):
        host.run_text(*text_call(135_000_000), progress=lambda f, d: seen.append(d))
    assert seen and "asking for a GPU for up to" in seen[0]
    import threading

    stop = threading.Event()
    stop.set()
    with pytest.raises(RunStopped):
        host.run_text(*text_call(135_000_000), cancel=stop)


@pytest.fixture(scope="module")
def spaces_path(tmp_path_factory) -> str:
    """A folder holding the spaces package (what a Space installs), for subprocesses only: this test process and
    the shared venv stay without it. The installed one if there is, else spaces from PyPI (no dependencies: they
    are gradio's own)."""
    import importlib.util

    spec = importlib.util.find_spec("spaces")
    if spec is not None and spec.submodule_search_locations:
        return str(Path(list(spec.submodule_search_locations)[0]).parent)
    target = tmp_path_factory.mktemp("spaces-site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-deps", "--target", str(target), "spaces"], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        pytest.skip(f"the spaces package could not be installed from here: {done.stderr[-500:]}")
    return str(target)


DECORATED_RUN = r"""
import json, pickle, sys
from pathlib import Path
from arena.running import zerogpu
from arena.types import BackendSpec, TextRunRequest
from tests.support.backend_contract import prepared_text

decorated = zerogpu.install()
import spaces
# Off ZeroGPU, spaces.GPU(duration=...) hands back the function itself: the same code path, run here.
assert decorated is zerogpu.gpu_call, (decorated, zerogpu._install_error)
args = (prepared_text(Path(sys.argv[1])), BackendSpec("pytorch"), TextRunRequest(prompt="Hello", max_new_tokens=6,
                                                                                    warmup=0, ignore_eos=True))
call = ("backends.torch_backend:PyTorchBackend", sys.argv[2], "run_text", args, {})
pickle.dumps(call)  # on ZeroGPU the call crosses a pipe to the forked process: it must pickle
host = zerogpu.GPUHost(call[0], call[1])
result = host.run_text(*args, progress=lambda *a: None)
again = host.run_text(*args)
pickle.dumps(result)  # and so must its result
print(json.dumps({"spaces": spaces.__file__, "error": result.error, "tokens": list(result.token_ids),
                  "again": list(again.token_ids), "provider": result.load.provider,
                  "hosts": len(zerogpu._HOSTS), "torch_in_ui": "torch" in sys.modules}))
"""


def test_the_decorated_path_runs_with_the_spaces_packages_cpu_fallback(spaces_path, tiny_llama, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACES_", "ZEROGPU"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), spaces_path])
    done = subprocess.run([sys.executable, "-c", DECORATED_RUN, str(tiny_llama), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["spaces"].startswith(spaces_path)
    assert out["error"] is None and len(out["tokens"]) == 6 and out["again"] == out["tokens"]
    assert out["provider"].startswith("torch ") and out["provider"].endswith(" on cpu")  # the CPU: no GPU here
    assert out["hosts"] == 1  # the loaded backend is kept for the next call in the same process


def test_with_zerogpus_variables_and_this_cpu_torch_the_path_is_refused_with_the_reason(spaces_path):
    """spaces on ZeroGPU refuses a torch without CUDA 12/13 at import (spaces/zero/torch/static.py): install()
    says so instead of failing, and the app can start without the GPU path."""
    code = ("from arena.running import zerogpu; print(zerogpu.install()); print(zerogpu._install_error)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), spaces_path]), **ON)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = done.stdout.strip().splitlines()[-2:]
    assert first == "None" and "startswith" in second  # torch.version.cuda is None in the CPU build


# --- the app on ZeroGPU's variables ----------------------------------------------------------------------------
@pytest.mark.slow
def test_the_app_starts_with_zerogpus_variables_runs_the_cpu_defaults_and_says_why_not_the_gpu(
        spaces_path, session_cache, tmp_path):
    from gradio_client import Client

    from tests.support.app import running_app

    with running_app(session_cache, tmp_path, args=("--no-warm-up",), SPACE_ID="local/zerogpu-test",
                     PYTHONPATH=os.pathsep.join([str(ROOT), spaces_path]), **ON) as app:
        client = Client(app["url"], verbose=False)
        result = client.predict(prompt="Why should one run machine learning models on-premises?",
                                api_name="/compare_text")
        kinds = {r["label"]: r["verdict"]["kind"] for r in result["results"]}
        assert kinds and set(kinds.values()) == {"MATCH"}, result
        refused = client.predict(prompt="Hello", backends='[{"backend": "pytorch", "device": "cuda"}]',
                                 api_name="/compare_text")
        text = json.dumps(refused)
        assert "CPU-only build" in text and "requirements-zerogpu.txt" in text, text[:2000]
        page = urllib.request.urlopen(app["url"] + "config", timeout=30).read().decode()
        assert "ONNX Runtime runs in its own long-lived worker process" in page and "TensorRT cannot be" in page
