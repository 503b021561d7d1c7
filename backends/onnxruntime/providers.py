"""ONNX Runtime's execution providers: which ones really start here, the libraries they load, what they log.

``get_available_providers()`` lists what the package was built with, not what runs: onnxruntime-gpu on a machine
without its CUDA libraries lists CUDA, then quietly runs everything on the CPU. So each GPU provider is started once
on a one-node graph in its own short-lived process (``python -m backends.onnxruntime.providers start-provider
NAME``), and a failure keeps ONNX Runtime's own reason. Cheap to import: onnxruntime is imported inside functions.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ORT_INSTALL = "pip install onnxruntime==1.32.0 onnxscript==0.7.2"
ORT_GPU_INSTALL = ("pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]==1.31.1'  # CUDA 13 "
                   "and cuDNN 9 libraries from pip; NVIDIA driver 580 or newer")
ORT_TRT_INSTALL = (ORT_GPU_INSTALL.split("  #")[0] + " 'tensorrt-cu13>=10.13,<11'  # its TensorRT provider loads "
                   "TensorRT 10 (libnvinfer.so.10)")
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
PROVIDERS = {
    "CPUExecutionProvider": "CPU",
    "CUDAExecutionProvider": "CUDA",
    "TensorrtExecutionProvider": "TensorRT",
}
PROVIDER_NAMES = {"CPUExecutionProvider": "CPU", "CUDAExecutionProvider": "CUDA",
                  "TensorrtExecutionProvider": "TensorRT EP"}  # as labels say them


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 (ONNX Runtime's C++ logger) while still passing it
    on to the real stderr (the worker log); the lines are in the yielded list once the block ends."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            os.write(2, text.encode())
            lines.extend(text.splitlines())


def load_gpu_libraries(onnxruntime: Any, provider: str) -> None:
    """Put the shared libraries a GPU provider links against into this process before a session needs them.

    ONNX Runtime's documented ways: torch's CUDA libraries when torch was imported first, ``preload_dlls()`` for
    the nvidia-* pip packages (it prints what it cannot find: kept quiet here, the provider check says it), and
    for the TensorRT provider the tensorrt package, whose ``tensorrt_libs`` loads libnvinfer.
    """
    import contextlib
    import importlib.util
    import io

    if provider == "TensorrtExecutionProvider" and importlib.util.find_spec("tensorrt") is not None:
        with contextlib.suppress(Exception):
            import tensorrt  # noqa: F401
    if hasattr(onnxruntime, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
            onnxruntime.preload_dlls()


def probe_model() -> bytes:
    """The smallest ONNX graph (one Relu) a provider can be started with."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def provider_failure_reason(lines: list[str]) -> str:
    """ONNX Runtime's own words for why a provider did not start (the library it could not load, what it needs)."""
    import re

    text = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in lines]
    loaded = next((m for line in text if (m := re.search(r"Failed to load library (\S+) with error: (.+)", line))),
                  None)
    needs = next((m.group(1).rstrip(". ") for line in text
                  if (m := re.search(r"Failed to create \w+\. (Require .*?)\.\s+Please", line))), None)
    if loaded:
        reason = f"{Path(loaded.group(1)).name} cannot be loaded: {loaded.group(2).strip()}"
        return f"{reason} (it requires {needs.removeprefix('Require ')})" if needs else reason
    if needs:
        return needs
    errors = [line.split("] ", 1)[-1] for line in text if line and ("Error" in line or "error" in line)]
    return errors[-1] if errors else "ONNX Runtime did not say why (see the log)"


PROVIDER_CHECK_TIMEOUT_S = 90  # the TensorRT provider builds an engine for the one-node graph: seconds


def start_provider(provider: str) -> bool:
    """Start ``provider`` on a one-node graph in this process; True if the session really runs on it."""
    import onnxruntime

    load_gpu_libraries(onnxruntime, provider)
    ran = onnxruntime.InferenceSession(probe_model(), providers=[provider]).get_providers()
    return bool(ran) and ran[0] == provider


def provider_status(available: list[str]) -> dict[str, dict[str, Any]]:
    """Whether each GPU provider this onnxruntime lists can actually start a session here.

    ``get_available_providers()`` lists what the package was built with, not what runs: onnxruntime-gpu on a
    machine without its CUDA libraries lists CUDA, then quietly runs everything on the CPU. So each one is
    started once on a one-node graph, in its own short-lived process (a provider that hangs or crashes costs
    only its own answer); a failure keeps ONNX Runtime's reason.
    """
    import subprocess

    status: dict[str, dict[str, Any]] = {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # the same onnxruntime
    for provider in GPU_PROVIDERS:
        if provider not in available:
            continue
        try:
            done = subprocess.run([sys.executable, "-m", "backends.onnxruntime.providers", "start-provider", provider],
                                  capture_output=True, text=True, env=env, timeout=PROVIDER_CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            status[provider] = {"ok": False, "reason": f"starting it took longer than {PROVIDER_CHECK_TIMEOUT_S} s"}
            continue
        ok = done.returncode == 0 and done.stdout.strip().endswith("started")
        status[provider] = {"ok": True} if ok else {
            "ok": False, "reason": provider_failure_reason((done.stderr + "\n" + done.stdout).splitlines())}
    return status


def usable_providers(ort_facts: dict[str, Any]) -> list[str]:
    """The providers onnxruntime lists, less GPU ones that failed to start (see `provider_status`)."""
    status = ort_facts.get("provider_status", {})
    return [p for p in ort_facts.get("providers", []) if status.get(p, {}).get("ok", True)]


def fallback_warnings(lines: list[str]) -> list[str]:
    """ONNX Runtime's warnings that nodes were not placed on the requested provider (they run on the CPU)."""
    keys = ("not assigned to the preferred execution providers", "fall back", "fallback to CPU",
            "Falling back to", "will run on CPU")
    found = []
    for line in lines:
        if any(k.lower() in line.lower() for k in keys):
            message = line.split("] ", 1)[-1].strip()
            if message not in found:
                found.append(message)
    return found


def onnxruntime_facts() -> dict[str, Any]:
    """What onnxruntime says about this machine, each GPU provider it lists tried for real (`provider_status`)."""
    try:
        import onnxruntime

        facts: dict[str, Any] = {
            "installed": True,
            "version": onnxruntime.__version__,
            "device": onnxruntime.get_device(),
            "providers": list(onnxruntime.get_available_providers()),
        }
        try:  # what a GPU build was compiled for ("13.0"); absent from some builds
            info = importlib.import_module("onnxruntime.capi.build_and_package_info")
            facts["cuda_version"] = getattr(info, "cuda_version", None)
        except ImportError:
            facts["cuda_version"] = None
        try:
            facts["provider_status"] = provider_status(facts["providers"])
        except Exception as exc:  # noqa: BLE001 - an unknown status leaves the listed providers offered
            facts["provider_status_error"] = f"{type(exc).__name__}: {exc}"
        return facts
    except Exception as exc:  # noqa: BLE001
        return {"installed": False, "error": f"{type(exc).__name__}: {exc}"}


def provider_summary(ort_facts: dict[str, Any]) -> str:
    """The providers onnxruntime lists, each GPU one that did not start marked so (see `provider_status`)."""
    status = ort_facts.get("provider_status", {})
    return ", ".join(p + ("" if status.get(p, {}).get("ok", True) else " (listed, but cannot start here)")
                     for p in ort_facts.get("providers", [])) or "-"


if __name__ == "__main__":  # python -m backends.onnxruntime.providers start-provider NAME (see `provider_status`)
    if len(sys.argv) == 3 and sys.argv[1] == "start-provider":
        try:
            started = start_provider(sys.argv[2])
        except Exception as exc:  # noqa: BLE001 - the message is the reason
            print(f"Error: {type(exc).__name__}: {exc}", file=sys.stderr)
            started = False
        print("started" if started else "did not start")
        sys.exit(0 if started else 1)
    sys.exit("usage: python -m backends.onnxruntime.providers start-provider PROVIDER")
