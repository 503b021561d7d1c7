"""Was the machine busy while a backend was timed? Its timings are only as good as the cores it had.

Around each backend's run the core samples the whole machine's CPU counters (/proc/stat: busy and stolen time),
the CPU pressure stall (/proc/pressure/cpu: the share of time runnable work waited for a core), the load average,
and this app's own CPU time (the app and its workers). Others' CPU time is the machine's busy time less the app's
own. A backend's timings are marked as taken on a busy machine when others used more than `BUSY_OTHERS_SHARE` of
the cores, the hypervisor stole more than `BUSY_STEAL_SHARE`, or work waited for a core more than
`BUSY_PRESSURE_SHARE` of the time; the figures and the reason go with the result, to the panel, the reports and
History. Linux counters; elsewhere, what can be read (the load average) or nothing.
"""

from __future__ import annotations

import os
import time
from typing import Any

BUSY_OTHERS_SHARE = 0.25  # of the machine's cores used by other processes while a backend ran
BUSY_STEAL_SHARE = 0.05  # of CPU time taken by the hypervisor (a shared VM)
BUSY_PRESSURE_SHARE = 0.25  # of the time some runnable work waited for a core (Linux PSI, "some")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat() -> tuple[float, float, float] | None:
    """(busy, steal, total) seconds over all CPUs since boot."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy / TICKS, steal / TICKS, (busy + idle + iowait + steal) / TICKS


def _pressure() -> float | None:
    """Seconds some runnable work waited for a CPU since boot (PSI), or None."""
    try:
        with open("/proc/pressure/cpu") as psi:
            for line in psi:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1]) / 1e6
    except (OSError, ValueError, IndexError):
        return None
    return None


def _own_cpu(extra_pids: tuple[int, ...] = ()) -> float | None:
    """CPU seconds of this process and its children (the workers) so far, and of ``extra_pids`` and theirs (a
    local model server a load sweep measures: its work is the measurement's, not another's)."""
    try:
        import psutil

        me = psutil.Process()
        total = sum(me.cpu_times()[:2])
        others = [psutil.Process(pid) for pid in extra_pids if psutil.pid_exists(pid)]
        family = {p.pid: p for p in me.children(recursive=True)}
        for process in others:
            family.setdefault(process.pid, process)
            family |= {c.pid: c for c in process.children(recursive=True)}
        family.pop(me.pid, None)
        for child in family.values():
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        return total
    except Exception:  # noqa: BLE001 - no psutil, or a process gone: the other figures still hold
        return None


def sample(extra_pids: tuple[int, ...] = ()) -> dict[str, Any]:
    """The machine's counters now (``extra_pids``: processes whose CPU time counts as this app's own)."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = None
    return {"t": time.monotonic(), "stat": _proc_stat(), "pressure": _pressure(), "own": _own_cpu(tuple(extra_pids)),
            "load1": load1}


def between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the machine did between two samples: {"seconds", "cpus", "others_share", "steal_share",
    "pressure_share", "load_before", "load_after", "busy", "reasons"}."""
    wall = max(after["t"] - before["t"], 1e-6)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    out: dict[str, Any] = {"seconds": round(wall, 2), "cpus": cpus, "load_before": before["load1"],
                           "load_after": after["load1"], "others_share": None, "steal_share": None,
                           "pressure_share": None}
    if before["stat"] and after["stat"]:
        busy, steal, total = (b - a for a, b in zip(before["stat"], after["stat"], strict=True))
        machine_cpus = max(total / wall, 1.0)  # the CPUs /proc/stat counts (a container may see the host's)
        if before["own"] is not None and after["own"] is not None:
            others = max(busy - (after["own"] - before["own"]), 0.0)
            out["others_share"] = round(min(others / (wall * machine_cpus), 1.0), 3)
        out["steal_share"] = round(steal / total, 3) if total > 0 else None
    if before["pressure"] is not None and after["pressure"] is not None:
        out["pressure_share"] = round(min((after["pressure"] - before["pressure"]) / wall, 1.0), 3)
    reasons = []
    if (out["others_share"] or 0) > BUSY_OTHERS_SHARE:
        reasons.append(f"other processes used {out['others_share']:.0%} of the CPUs")
    if (out["steal_share"] or 0) > BUSY_STEAL_SHARE:
        reasons.append(f"the hypervisor took {out['steal_share']:.0%} of the CPU time")
    if (out["pressure_share"] or 0) > BUSY_PRESSURE_SHARE:
        reasons.append(f"work waited for a CPU {out['pressure_share']:.0%} of the time")
    out |= {"busy": bool(reasons), "reasons": reasons}
    return out


def busy_sentence(loads: dict[str, dict[str, Any]]) -> str:
    """One sentence for a run whose backends were timed on a busy machine ("" when none was)."""
    busy = {label: figures for label, figures in loads.items() if figures and figures.get("busy")}
    if not busy:
        return ""
    parts = [f"{label} ({'; '.join(figures['reasons'])})" for label, figures in busy.items()]
    load = next((f for f in busy.values() if f.get("load_before") is not None), None)
    average = (f"; load average {load['load_before']:.1f} on {load['cpus']} CPU(s) before it" if load else "")
    return (f"Timings taken on a busy machine: {', '.join(parts)}{average}. Absolute times are slower than this "
            "machine can do; compare backends within one quiet run, or rerun.")
