"""How many CPUs and how much memory this process may really use: the CPU affinity, the container's cgroup quota
(v1 or v2) and ``$CPU_CORES`` (set on Hugging Face Spaces), not ``os.cpu_count()``, which reports the host.

Pure standard library, safe in the UI process. Every function takes the cgroup mount and the /proc/self/cgroup
file as arguments, so tests point them at sample trees.

Worker processes call `apply_thread_env` before importing torch or onnxruntime, and the backends give torch
and ONNX Runtime `thread_count()` threads: a 1-CPU container no longer runs 16 threads fighting for one core.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
V1_CPU_MOUNTS = ("cpu,cpuacct", "cpu", "cpuacct,cpu")
V1_MEMORY_MOUNTS = ("memory",)
V2_MOUNTS = ("", "unified")  # cgroup v2 at the root, or the hybrid layout's unified hierarchy
UNLIMITED_BYTES = 1 << 60  # cgroup v1 writes ~2**63 (rounded down to a page) for "no limit"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class CgroupQuota:
    """A CPU bandwidth limit: ``quota_us`` of CPU time per ``period_us``, i.e. ``cpus`` CPUs (may be fractional)."""

    quota_us: int
    period_us: int
    file: str
    version: int  # 1 or 2

    @property
    def cpus(self) -> float:
        return self.quota_us / self.period_us


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may use, and where each number came from."""

    effective: int  # the smallest of the numbers below that are set
    source: str  # which one decided: "affinity", "cgroup quota", "CPU_CORES" or "cpu_count"
    host_cores: int | None  # os.cpu_count(): the host's, even in a container
    affinity: int | None  # CPUs in this process's affinity mask (taskset, cpuset)
    cgroup_quota: float | None  # quota / period in CPUs; None when unlimited or no cgroup file was found
    cgroup_file: str | None
    cpu_cores_env: int | None  # $CPU_CORES when set to a positive integer

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def own_cgroups(proc_cgroup: str | Path = PROC_SELF_CGROUP) -> dict[str, str]:
    """This process's cgroup path per controller from /proc/self/cgroup: "0::/path" is the v2 one (key ""),
    "4:cpu,cpuacct:/path" gives both "cpu" and "cpuacct"."""
    paths: dict[str, str] = {}
    for line in (_read(Path(proc_cgroup)) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            paths.setdefault(controller, path or "/")
    return paths


def _candidates(mount: Path, relative: str | None) -> Iterator[Path]:
    """The process's own cgroup folder under ``mount`` and each parent up to the mount itself (a parent's limit
    binds too). In a container the mount is often the container's own cgroup, so paths that do not exist are
    skipped and the mount itself is always tried."""
    seen: set[Path] = set()
    parts = [p for p in (relative or "/").split("/") if p and p not in (".", "..")]
    for depth in range(len(parts), -1, -1):
        folder = mount.joinpath(*parts[:depth])
        if folder not in seen:
            seen.add(folder)
            yield folder


def _v2_folders(root: Path, cgroups: Mapping[str, str]) -> Iterator[Path]:
    for mount in V2_MOUNTS:
        yield from _candidates(root / mount if mount else root, cgroups.get(""))


def _v1_folders(root: Path, cgroups: Mapping[str, str], mounts: tuple[str, ...], controller: str) -> Iterator[Path]:
    for mount in mounts:
        if (root / mount).is_dir():
            yield from _candidates(root / mount, cgroups.get(controller))


def parse_cpu_max(text: str | None) -> tuple[int, int] | None:
    """cgroup v2 ``cpu.max``: "150000 100000" -> (150000, 100000); "max 100000" or garbage -> None."""
    fields = (text or "").split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100000
    except ValueError:
        return None
    return (quota, period) if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str | None, period_text: str | None) -> tuple[int, int] | None:
    """cgroup v1 ``cpu.cfs_quota_us`` (-1: unlimited) and ``cpu.cfs_period_us``."""
    try:
        quota, period = int(quota_text or ""), int(period_text or "")
    except ValueError:
        return None
    return (quota, period) if quota > 0 and period > 0 else None


def cgroup_cpu_quota(root: str | Path = CGROUP_ROOT,
                     proc_cgroup: str | Path = PROC_SELF_CGROUP) -> CgroupQuota | None:
    """The tightest CPU quota on this process's cgroup or its parents (v2 ``cpu.max``, v1 CFS), None if none."""
    root, cgroups = Path(root), own_cgroups(proc_cgroup)
    found: list[CgroupQuota] = []
    for folder in _v2_folders(root, cgroups):
        limit = parse_cpu_max(_read(folder / "cpu.max"))
        if limit:
            found.append(CgroupQuota(*limit, file=str(folder / "cpu.max"), version=2))
    for folder in _v1_folders(root, cgroups, V1_CPU_MOUNTS, "cpu"):
        limit = parse_cfs(_read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us"))
        if limit:
            found.append(CgroupQuota(*limit, file=str(folder / "cpu.cfs_quota_us"), version=1))
    return min(found, key=lambda q: q.cpus, default=None)


def parse_memory_limit(text: str | None) -> int | None:
    """v2 ``memory.max`` ("max": none) or v1 ``memory.limit_in_bytes`` (~2**63: none); bytes, or None."""
    try:
        value = int(text or "")
    except ValueError:
        return None
    return value if 0 < value < UNLIMITED_BYTES else None


def memory_limit_bytes(root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_SELF_CGROUP) -> int | None:
    """The tightest memory limit on this process's cgroup or its parents, in bytes; None when unlimited."""
    root, cgroups = Path(root), own_cgroups(proc_cgroup)
    limits = [parse_memory_limit(_read(folder / "memory.max")) for folder in _v2_folders(root, cgroups)]
    limits += [parse_memory_limit(_read(folder / "memory.limit_in_bytes"))
               for folder in _v1_folders(root, cgroups, V1_MEMORY_MOUNTS, "memory")]
    return min((limit for limit in limits if limit), default=None)


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _affinity() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return None


def cpu_budget(root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_SELF_CGROUP,
               environ: Mapping[str, str] | None = None, affinity: int | None = None,
               host_cores: int | None = None) -> CpuBudget:
    """The CPUs this process may use: the smallest of its affinity, its cgroup quota rounded up and $CPU_CORES.

    ``affinity`` and ``host_cores`` default to what the OS says; tests pass them."""
    environ = os.environ if environ is None else environ
    host_cores = host_cores if host_cores is not None else os.cpu_count()
    affinity = affinity if affinity is not None else _affinity()
    quota = cgroup_cpu_quota(root, proc_cgroup)
    cpu_cores = _positive_int(environ.get("CPU_CORES"))
    candidates = [(n, source) for n, source in (
        (affinity, "affinity"),
        (max(1, math.ceil(quota.cpus)) if quota else None, "cgroup quota"),
        (cpu_cores, "CPU_CORES"),
    ) if n]
    effective, source = min(candidates, key=lambda c: c[0], default=(host_cores or 1, "cpu_count"))
    return CpuBudget(effective=effective, source=source, host_cores=host_cores, affinity=affinity,
                     cgroup_quota=round(quota.cpus, 3) if quota else None,
                     cgroup_file=quota.file if quota else None, cpu_cores_env=cpu_cores)


def thread_count(environ: Mapping[str, str] | None = None) -> int:
    """Threads for torch and ONNX Runtime: ``$OMP_NUM_THREADS`` when set (by the user, or by `apply_thread_env`
    in a worker), else the CPU budget."""
    environ = os.environ if environ is None else environ
    return _positive_int(environ.get("OMP_NUM_THREADS")) or cpu_budget(environ=environ).effective


def apply_thread_env(environ: MutableMapping[str, str] | None = None) -> int:
    """Set OMP_NUM_THREADS and MKL_NUM_THREADS to the CPU budget where the user has not set them; call it before
    torch or onnxruntime is imported. Returns the thread count the backends should use."""
    environ = os.environ if environ is None else environ
    budget = str(cpu_budget(environ=environ).effective)
    for name in THREAD_VARIABLES:
        if not _positive_int(environ.get(name)):
            environ[name] = budget
    return thread_count(environ)


def physical_memory_bytes() -> int | None:
    """The machine's RAM (``/proc/meminfo``'s MemTotal), None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


@dataclass(frozen=True)
class ServerMemory:
    """The memory this server may use: the tightest of its cgroup limit (a Space's container) and the RAM."""

    total: int  # bytes
    source: str  # "cgroup memory limit" or "RAM"


def server_memory(root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_SELF_CGROUP,
                  physical: int | None = None) -> ServerMemory:
    physical = physical if physical is not None else physical_memory_bytes()
    cgroup = memory_limit_bytes(root, proc_cgroup)
    if cgroup and (physical is None or cgroup < physical):
        return ServerMemory(cgroup, "cgroup memory limit")
    return ServerMemory(physical or 8 << 30, "RAM" if physical else "assumed")
