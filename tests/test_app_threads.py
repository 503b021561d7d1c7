"""Threads from the CPU budget: the app pinned to one CPU gives torch and ONNX Runtime one thread each and its
Environment tab says 1 CPU."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
from gradio_client import Client

from arena.running.workers import Worker, run_isolated
from tests.support.app import running_app
from ui.environment_tab import cpu_line, environment_markdown


def test_cpu_line_names_the_budget_and_where_it_came_from():
    one = {"cpu": {"host_cores": 2, "affinity": 1, "cgroup_quota": None, "cpu_cores_env": None, "effective": 1,
                   "source": "affinity"}, "memory_gb": 23.5, "memory_limit_gb": None}
    assert cpu_line(one) == ("1 CPU for this app (affinity: 1 of 2 host cores; cgroup quota: none), "
                             "23.5 GB RAM (container limit: none)")
    space = {"cpu": {"host_cores": 16, "affinity": 16, "cgroup_quota": 2.0, "cpu_cores_env": 2, "effective": 2,
                     "source": "cgroup quota"}, "memory_gb": 125.8, "memory_limit_gb": 16.0}
    assert cpu_line(space) == ("2 CPUs for this app (affinity: 16 of 16 host cores; cgroup quota: 2 CPUs; "
                               "CPU_CORES=2), 125.8 GB RAM (container limit: 16.0 GB)")
    assert cpu_line({"cpu_count": 4, "memory_gb": 8}).startswith("4 CPU cores")  # facts from an older probe


def test_workers_size_torch_and_onnxruntime_from_the_budget(tmp_path, monkeypatch):
    """$CPU_CORES (a Space's quota) below this machine's cores: the worker sets OMP/MKL_NUM_THREADS before torch
    is imported, torch and ONNX Runtime get that many threads; an isolated conversion process gets them too."""
    monkeypatch.setenv("CPU_CORES", "1")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    worker = Worker("threads", "tests.support.helpers:ThreadProbe", log_dir=tmp_path)
    try:
        seen = worker.call("threads", timeout=120)
    finally:
        worker.stop()
    assert seen == {"env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, "torch_as_imported": 1, "torch": 1,
                    "ort_intra_op": 1, "ort_inter_op": 1}
    run_isolated("tests.support.helpers:isolated_thread_env", str(tmp_path / "env.txt"), description="thread env")
    assert (tmp_path / "env.txt").read_text() == "1 1"

    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting wins
    run_isolated("tests.support.helpers:isolated_thread_env", str(tmp_path / "env.txt"), description="thread env")
    assert (tmp_path / "env.txt").read_text() == "3 1"


@pytest.mark.slow
def test_app_pinned_to_one_cpu_gives_each_runtime_one_thread(tiny_llama, session_cache, tmp_path, monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CPU_CORES"):  # the budget must come from the affinity
        monkeypatch.delenv(name, raising=False)
    first_cpu = min(os.sched_getaffinity(0))
    # The session's cache: the tiny Llama's export made here (or before) serves the later tests too.
    with running_app(session_cache, tmp_path, preexec_fn=lambda: os.sched_setaffinity(0, {first_cpu}),
                     HF_HUB_OFFLINE="1") as server:
        with urllib.request.urlopen(server["url"] + "config", timeout=30) as response:
            config = json.load(response)
        client = Client(server["url"], verbose=False)
        result = client.predict(prompt="Hello", model=str(tiny_llama), backends=["pytorch", "onnxruntime"],
                                max_new_tokens=4, api_name="/compare_text")

    assert result["error"] is None, result["error"]
    assert [r["error"] for r in result["results"]] == [None, None], [r["log_tail"] for r in result["results"]]
    assert [r["load"]["threads"] for r in result["results"]] == [1, 1]
    assert result["results"][1]["provider"] == "CPUExecutionProvider"

    cpu = result["environment"]["cpu"]
    assert (cpu["effective"], cpu["affinity"]) == (1, 1) and cpu["host_cores"] == os.cpu_count()
    assert "- 1 CPU for this app (affinity: 1 of" in environment_markdown(result["environment"], {})
    # What the Environment tab shows: the initial value of its Markdown component in the app's config.
    tab = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "environment")
    assert "- 1 CPU for this app (affinity: 1 of" in tab["props"]["value"]
