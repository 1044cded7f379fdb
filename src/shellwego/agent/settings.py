"""Agent settings: built once at the entry point and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shellwego.replicas import parse_urls


@dataclass(frozen=True, slots=True)
class AgentSettings:
    # the control plane's base URL, e.g. http://10.0.0.1:8000, or the URLs of its replicas
    # separated by commas (the agent moves to the next one when one fails)
    server_url: str
    join_token: str | None  # needed only for the first start (registration)
    state_dir: Path  # node.json, the slug cache
    hostname: str
    labels: dict[str, str] = field(default_factory=dict)
    heartbeat_interval: float = 5.0
    address: str = "127.0.0.1"  # where the edge reaches this node's instances
    resync_interval: float = 30.0  # full reconcile pass even when nothing changed
    # None: measured on the host (CPU count * 1000, MemTotal)
    capacity_cpu_millis: int | None = None
    capacity_memory_bytes: int | None = None
    # CPU is compressible (instances get a cgroup quota, not a reservation): a node may
    # offer more milli-CPU than it has; memory is never overcommitted
    cpu_overcommit: float = 1.0

    @property
    def server_urls(self) -> tuple[str, ...]:
        """The replicas' URLs, in the order they are tried (ConfigError when malformed)."""
        return parse_urls(self.server_url)
