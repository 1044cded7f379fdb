"""What every use case needs, built once at the entry point."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from shellwego.bus import Bus
from shellwego.clock import Clock
from shellwego.crypto import Envelope
from shellwego.errors import RuntimeUnavailable
from shellwego.models import Role
from shellwego.settings import Settings
from shellwego.store import Database, after_commit

if TYPE_CHECKING:
    from shellwego.build.artifacts import ArtifactStore
    from shellwego.build.builder import Builder
    from shellwego.bus.memo import TopicMemo
    from shellwego.controllers.cluster import Shortfalls
    from shellwego.edge.routes import RouteTable
    from shellwego.runtime.driver import Driver

    from .edges import VersionedTable

# (record type, name) → the records' values, e.g. ("TXT", "_shellwego.example.com")
Resolver = Callable[[str, str], list[str]]
# an app's id → the edge's figures for it (requests, statuses, latencies)
Traffic = Callable[[str], Awaitable[dict[str, object]]]


@dataclass
class Context:
    """The process's configuration, database, clock and bus, and what its entry point
    plugs in (None: this process has none of it)."""

    settings: Settings
    db: Database
    envelope: Envelope
    clock: Clock
    bus: Bus
    # ---- plugged in by the entry point -------------------------------------------------
    artifacts: ArtifactStore | None = None  # slugs and git repositories
    builder: Builder | None = None  # source → slug
    oneoff_driver: Driver | None = None  # runs one-off and release-phase commands
    resolver: Resolver | None = None  # DNS lookups of domain verification
    traffic: Traffic | None = None  # the edge's figures, where an edge runs in-process
    # ---- what this process keeps in memory ---------------------------------------------
    edge_table: RouteTable | None = None  # the route table the in-process edge serves
    route_tables: TopicMemo[VersionedTable] | None = None  # shared read (services/edges)
    rollout_shortfalls: Shortfalls | None = None  # formations that did not fit (cluster)
    # instance id → (cpu milli-cores used, memory bytes), as the agents last reported
    instance_stats: dict[str, tuple[float, int]] = field(default_factory=dict)
    git_read_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def require_artifacts(self) -> ArtifactStore:
        if self.artifacts is None:
            raise RuntimeUnavailable("this control plane has no artifact store")
        return self.artifacts


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user acting in one organization with one role, through a token."""

    user_id: str
    organization_id: str
    role: Role
    token_id: str | None
    is_operator: bool = False

    def at_least(self, role: Role) -> bool:
        return self.role.rank >= role.rank


def wake_after_commit(ctx: Context, session: Session, *topics: str) -> None:
    """Notify ``topics`` on the bus once ``session`` has committed (never before)."""

    def notify() -> None:
        for topic in topics:
            ctx.bus.notify(topic)

    after_commit(session, notify)
