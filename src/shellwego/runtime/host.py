"""What this host offers to runtimes: which runtimes an agent runs, and the capacity they
share."""

from __future__ import annotations

import os
from pathlib import Path

from .cgroups import cgroup_mounts, own_cgroups

UNLIMITED_V1 = 1 << 62  # cgroup v1 reports "no limit" as a huge page-rounded number


def _cgroup_dirs() -> dict[str, Path]:
    """This process's own cgroup directory per controller ("" = cgroup v2)."""
    own = own_cgroups()
    dirs: dict[str, Path] = {}
    for fstype, mount, options in cgroup_mounts():
        names = [""] if fstype == "cgroup2" else sorted(options & {"memory", "cpu"})
        for name in names:
            if name in own and name not in dirs:
                dirs[name] = mount / own[name].lstrip("/")
    return dirs


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_cpu_millis(dirs: dict[str, Path]) -> int | None:
    if "" in dirs and (text := _read(dirs[""] / "cpu.max")):
        quota, _, period = text.partition(" ")
        if quota != "max" and period:
            return int(quota) * 1000 // int(period)
    if "cpu" in dirs:
        quota_text = _read(dirs["cpu"] / "cpu.cfs_quota_us")
        period_text = _read(dirs["cpu"] / "cpu.cfs_period_us")
        if quota_text and period_text and int(quota_text) > 0:
            return int(quota_text) * 1000 // int(period_text)
    return None


def _cgroup_memory(dirs: dict[str, Path]) -> int | None:
    if "" in dirs and (text := _read(dirs[""] / "memory.max")) and text != "max":
        return int(text)
    if "memory" in dirs and (text := _read(dirs["memory"] / "memory.limit_in_bytes")):
        value = int(text)
        return value if value < UNLIMITED_V1 else None
    return None


def cpu_flags(
    cpuinfo: Path = Path("/proc/cpuinfo"), keys: tuple[str, ...] = ("flags", "Features")
) -> frozenset[str] | None:
    """The CPU's feature flags from the first ``keys`` line of ``cpuinfo`` (x86 ``flags``,
    Arm ``Features``); None when it cannot be read or has no such line."""
    for line in (_read(cpuinfo) or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in keys:
            return frozenset(value.split())
    return None


def _mem_total(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in (_read(meminfo) or "").splitlines():
        key, _, rest = line.partition(":")
        if key == "MemTotal":
            value, _, unit = rest.strip().partition(" ")
            return int(value) * (1024 if unit.lower() == "kb" else 1)
    return 0


def host_capacity() -> tuple[int, int]:
    """(cpu_millis, memory_bytes) this agent may hand out: the host's, or its cgroup's if lower."""
    cpu = len(os.sched_getaffinity(0)) * 1000
    memory = _mem_total()
    dirs = _cgroup_dirs()
    cg_cpu = _cgroup_cpu_millis(dirs)
    if cg_cpu is not None and cg_cpu > 0:
        cpu = min(cpu, cg_cpu)
    cg_mem = _cgroup_memory(dirs)
    if cg_mem is not None and (memory == 0 or cg_mem < memory):
        memory = cg_mem
    return cpu, memory
