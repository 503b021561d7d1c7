"""Timings from a busy machine are marked: the machine's counters around each backend's run, others' CPU time
told from the app's own (`arena.running.load`), and the sentence the panel, the reports and History show."""

from __future__ import annotations

import subprocess
import time

from arena.running.load import between, busy_sentence, sample
from ui.format import machine_rows, run_summary


def synthetic(t: float, busy: float, steal: float, total: float, own: float, pressure: float) -> dict:
    return {"t": t, "stat": (busy, steal, total), "pressure": pressure, "own": own, "load1": 3.0}


def test_others_cpu_time_is_the_machines_less_the_apps_own():
    quiet = between(synthetic(0, 100, 0, 400, 50, 10), synthetic(10, 118, 0, 420, 67, 10.5))
    assert quiet["others_share"] == 0.05 and not quiet["busy"] and quiet["reasons"] == []
    busy = between(synthetic(0, 100, 0, 400, 50, 10), synthetic(10, 118, 0, 420, 58, 10.5))
    assert busy["busy"] and busy["reasons"] == ["other processes used 50% of the CPUs"]
    stolen = between(synthetic(0, 100, 0, 400, 50, 10), synthetic(10, 105, 3, 420, 55, 15))
    assert stolen["reasons"] == ["the hypervisor took 15% of the CPU time", "work waited for a CPU 50% of the time"]
    sentence = busy_sentence({"PyTorch · cpu · fp32": busy, "ONNX Runtime": quiet})
    assert sentence.startswith("Timings taken on a busy machine: PyTorch · cpu · fp32 (other processes used 50%")
    assert "ONNX Runtime" not in sentence and busy_sentence({"ONNX Runtime": quiet}) == ""


def test_a_process_outside_the_app_spinning_a_core_makes_the_machine_busy():
    spinner = subprocess.Popen(["bash", "-c", "timeout 4 sh -c 'while :; do :; done' & disown"])  # not our child
    spinner.wait()
    time.sleep(0.5)
    before = sample()
    time.sleep(2.0)
    found = between(before, sample())
    assert found["busy"] and any(r.startswith("other processes used") for r in found["reasons"]), found
    assert found["others_share"] >= 0.3 and found["cpus"] >= 1


def test_the_panel_and_the_status_line_say_it():
    load = between(synthetic(0, 100, 0, 400, 50, 10), synthetic(10, 118, 0, 420, 58, 10.5))
    assert machine_rows({"machine_load": load})[0][1].startswith("**busy**: other processes used 50%")
    assert machine_rows({"machine_load": {"busy": False, "others_share": 0.02}}) == [
        ("Machine while timed", "quiet (others 2% of the CPUs)")]
    run = {"results": [], "busy_machine": busy_sentence({"PyTorch": load}), "prompt_token_ids": [1, 2]}
    assert "BUSY MACHINE</span> Timings taken on a busy machine: PyTorch" in run_summary(run)
