"""The CPU budget and memory limit from sample cgroup v1 and v2 trees (arena/running/resources.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from arena.running.resources import (
    apply_thread_env,
    cgroup_cpu_quota,
    cpu_budget,
    memory_limit_bytes,
    own_cgroups,
    thread_count,
)

GIB = 2**30


def tree(tmp_path: Path, files: dict[str, str], proc: str = "0::/\n") -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup under tmp_path/cgroup and a fake /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    (tmp_path / "proc-cgroup").write_text(proc)
    return root, tmp_path / "proc-cgroup"


def budget(root: Path, proc: Path, affinity: int = 4, **environ: str):
    return cpu_budget(root, proc, environ=environ, affinity=affinity, host_cores=8)


def test_v2_unlimited_leaves_the_affinity(tmp_path):
    root, proc = tree(tmp_path, {"cpu.max": "max 100000", "memory.max": "max"})
    assert cgroup_cpu_quota(root, proc) is None
    b = budget(root, proc, affinity=4)
    assert (b.effective, b.source, b.cgroup_quota, b.host_cores) == (4, "affinity", None, 8)
    assert memory_limit_bytes(root, proc) is None


@pytest.mark.parametrize(("cpu_max", "cpus", "effective"), [
    ("150000 100000", 1.5, 2),  # a fractional quota rounds up
    ("50000 100000", 0.5, 1),  # never below one
    ("200000 100000", 2.0, 2),
    ("100000", 1.0, 1),  # period omitted: the kernel's default 100 ms
])
def test_v2_quota(tmp_path, cpu_max, cpus, effective):
    root, proc = tree(tmp_path, {"cpu.max": cpu_max})
    quota = cgroup_cpu_quota(root, proc)
    assert quota.cpus == cpus and quota.version == 2 and quota.file == str(root / "cpu.max")
    b = budget(root, proc, affinity=4)
    assert (b.effective, b.source, b.cgroup_quota) == (effective, "cgroup quota", cpus)


def test_v2_own_cgroup_path_and_its_parents(tmp_path):
    """The process's folder from /proc/self/cgroup ("0::/path"); a parent's tighter limit binds too."""
    root, proc = tree(tmp_path, {
        "cpu.max": "max 100000",
        "app.slice/cpu.max": "100000 100000",
        "app.slice/arena.scope/cpu.max": "300000 100000",
        "app.slice/arena.scope/memory.max": str(3 * GIB),
        "app.slice/memory.max": "max",
    }, proc="0::/app.slice/arena.scope\n")
    assert own_cgroups(proc) == {"": "/app.slice/arena.scope"}
    quota = cgroup_cpu_quota(root, proc)
    assert quota.cpus == 1.0 and quota.file == str(root / "app.slice" / "cpu.max")
    assert memory_limit_bytes(root, proc) == 3 * GIB


def test_v2_container_namespace_path_missing_falls_back_to_the_mount(tmp_path):
    root, proc = tree(tmp_path, {"cpu.max": "150000 100000"}, proc="0::/../../kubepods/pod1/abc\n")
    assert cgroup_cpu_quota(root, proc).cpus == 1.5


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
def test_v1_quota(tmp_path, mount):
    proc = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    root, proc = tree(tmp_path, {f"{mount}/cpu.cfs_quota_us": "150000", f"{mount}/cpu.cfs_period_us": "100000",
                                 "memory/memory.limit_in_bytes": str(2 * GIB)}, proc=proc)
    quota = cgroup_cpu_quota(root, proc)
    assert quota.cpus == 1.5 and quota.version == 1
    assert quota.file == str(root / mount / "cpu.cfs_quota_us")
    assert budget(root, proc, affinity=16).effective == 2
    assert memory_limit_bytes(root, proc) == 2 * GIB


def test_v1_unlimited(tmp_path):
    """-1 is no quota; v1 writes ~2**63 (a page-rounded LONG_MAX) for no memory limit."""
    proc = "4:memory:/process_api/x\n3:cpu,cpuacct:/\n"
    root, proc = tree(tmp_path, {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000",
                                 "memory/memory.limit_in_bytes": "9223372036854771712",
                                 "memory/process_api/x/memory.limit_in_bytes": "9223372036854771712"}, proc=proc)
    assert cgroup_cpu_quota(root, proc) is None
    assert memory_limit_bytes(root, proc) is None
    assert budget(root, proc, affinity=2).effective == 2


def test_v1_own_cgroup_folder(tmp_path):
    proc = "4:memory:/process_api/x\n3:cpu,cpuacct:/jobs/1\n"
    root, proc = tree(tmp_path, {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000",
                                 "cpu,cpuacct/jobs/1/cpu.cfs_quota_us": "50000",
                                 "cpu,cpuacct/jobs/1/cpu.cfs_period_us": "100000",
                                 "memory/memory.limit_in_bytes": "9223372036854771712",
                                 "memory/process_api/x/memory.limit_in_bytes": str(GIB)}, proc=proc)
    assert cgroup_cpu_quota(root, proc).cpus == 0.5
    assert budget(root, proc).effective == 1
    assert memory_limit_bytes(root, proc) == GIB


def test_cpu_cores_env_overrides_when_smaller(tmp_path):
    root, proc = tree(tmp_path, {"cpu.max": "400000 100000"})
    b = budget(root, proc, affinity=8, CPU_CORES="2")
    assert (b.effective, b.source, b.cpu_cores_env, b.cgroup_quota) == (2, "CPU_CORES", 2, 4.0)
    assert budget(root, proc, affinity=1, CPU_CORES="2").source == "affinity"  # the smallest wins


@pytest.mark.parametrize("value", ["", "abc", "0", "-2", "1.5"])
def test_invalid_cpu_cores_is_ignored(tmp_path, value):
    root, proc = tree(tmp_path, {})
    b = budget(root, proc, affinity=3, CPU_CORES=value)
    assert (b.effective, b.source, b.cpu_cores_env) == (3, "affinity", None)


@pytest.mark.parametrize("files", [
    {"cpu.max": "garbage"},
    {"cpu.max": "0 100000"},
    {"cpu.max": "100000 0"},
    {"cpu.max": ""},
    {"cpu/cpu.cfs_quota_us": "lots", "cpu/cpu.cfs_period_us": "100000"},
    {"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "0"},
    {"cpu/cpu.cfs_quota_us": "50000"},  # no period file
])
def test_invalid_quota_files_are_ignored(tmp_path, files):
    root, proc = tree(tmp_path, files, proc="garbage line\n")
    assert cgroup_cpu_quota(root, proc) is None
    assert budget(root, proc, affinity=3).effective == 3


@pytest.mark.parametrize(("text", "expected"), [("max", None), ("0", None), ("abc", None), ("", None),
                                                (str(512 * 2**20), 512 * 2**20)])
def test_memory_limit_v2_values(tmp_path, text, expected):
    root, proc = tree(tmp_path, {"memory.max": text})
    assert memory_limit_bytes(root, proc) == expected


def test_no_cgroup_files_at_all(tmp_path):
    root = tmp_path / "nothing"
    assert cgroup_cpu_quota(root, tmp_path / "missing") is None
    assert memory_limit_bytes(root, tmp_path / "missing") is None
    b = cpu_budget(root, tmp_path / "missing", environ={}, affinity=None, host_cores=6)
    assert b.effective >= 1  # this machine's affinity


def test_thread_env_is_set_unless_the_user_set_it():
    environ = {"CPU_CORES": "1"}
    assert apply_thread_env(environ) == 1
    assert environ["OMP_NUM_THREADS"] == environ["MKL_NUM_THREADS"] == "1"
    user = {"CPU_CORES": "1", "OMP_NUM_THREADS": "3"}
    assert apply_thread_env(user) == 3 and user["OMP_NUM_THREADS"] == "3" and user["MKL_NUM_THREADS"] == "1"
    assert thread_count({"OMP_NUM_THREADS": "bad", "CPU_CORES": "1"}) == 1
