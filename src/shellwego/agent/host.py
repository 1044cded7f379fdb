"""What this host offers: CPUs usable by the agent and total memory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shellwego.errors import ConfigError


@dataclass(frozen=True, slots=True)
class HostCapacity:
    cpu_millis: int
    memory_bytes: int


def cpu_millis() -> int:
    """CPUs this process may run on (affinity, so cpusets count), in milli-cores."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    return max(count, 1) * 1000


def memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemTotal from /proc/meminfo, in bytes."""
    try:
        text = meminfo.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {meminfo} to measure memory; set the node's memory capacity"
        ) from exc
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == "MemTotal":
            value, _, unit = rest.strip().partition(" ")
            factor = 1024 if unit.strip().lower() == "kb" else 1
            return int(value) * factor
    raise ConfigError(f"no MemTotal in {meminfo}; set the node's memory capacity")


def host_capacity() -> HostCapacity:
    return HostCapacity(cpu_millis=cpu_millis(), memory_bytes=memory_bytes())
