"""Agent settings: built once at the entry point and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class AgentSettings:
    server_url: str  # control plane base URL, e.g. http://10.0.0.1:8000
    join_token: str | None  # needed only for the first start (registration)
    state_dir: Path  # node.json, the slug cache
    hostname: str
    labels: dict[str, str] = field(default_factory=dict)
    runtimes: list[str] = field(default_factory=lambda: ["process"])
    heartbeat_interval: float = 5.0
    address: str = "127.0.0.1"  # where the edge reaches this node's instances
    resync_interval: float = 30.0  # full reconcile pass even when nothing changed
    # None: measured on the host (CPU count * 1000, MemTotal)
    capacity_cpu_millis: int | None = None
    capacity_memory_bytes: int | None = None
    # CPU is compressible (instances get a cgroup quota, not a reservation): a node may
    # offer more milli-CPU than it has; memory is never overcommitted
    cpu_overcommit: float = 1.0
