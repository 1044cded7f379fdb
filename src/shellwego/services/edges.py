"""What the edge serves, from the database: the route table, for the control plane's own
edge and for edge nodes (which fetch it with a blocking query)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from shellwego.bus.memo import TopicMemo
from shellwego.edge.routes import AppRoute, RouteTable, Upstream
from shellwego.edge.tables import dump_table, table_to_dict
from shellwego.errors import Unauthenticated
from shellwego.models import (
    App,
    AppStatus,
    DesiredState,
    Domain,
    DomainStatus,
    Instance,
    Node,
)
from shellwego.store import repository as repo

from . import nodes
from .context import Context

RECHECK_SECONDS = 2.0  # a blocking query re-reads the table at least this often


def route_table(ctx: Context) -> RouteTable:
    """The whole table: every app's hostnames (its platform host and its verified domains)
    → its healthy, non-draining web instances; none for a stopped app, and no route at all
    for a deleted one (its hosts answer 404 like any unknown host)."""
    base = ctx.settings.base_domain
    with ctx.db.session() as s:
        addresses = {n.id: n.address for n in repo.find_all(s, Node)}
        domains: dict[str, list[str]] = {}
        for d in repo.find_all(s, Domain, status=DomainStatus.ACTIVE.value):
            domains.setdefault(d.app_id, []).append(d.hostname.lower())
        upstreams: dict[str, list[Upstream]] = {}
        for inst in repo.find_all(
            s, Instance, desired_state=DesiredState.RUNNING.value, process_type="web", healthy=True
        ):
            # its own network's address, else its node's (it listens on a host port)
            address = inst.address or addresses.get(inst.node_id)
            if inst.drain_started_at is None and address is not None:
                upstreams.setdefault(inst.app_id, []).append(
                    Upstream(address=f"{address}:{inst.port}")
                )
        routes = [
            AppRoute(
                app_id=app.id,
                app_name=app.name,
                hostnames=[f"{app.name.lower()}.{base}", *sorted(domains.get(app.id, []))],
                upstreams=sorted(upstreams.get(app.id, []), key=lambda u: u.address)
                if app.status != AppStatus.STOPPED
                else [],
                health_path=app.health_check.path,
                redirect_https=app.redirect_https,
            )
            for app in repo.find_all(s, App, deleted_at=None)
        ]
    return RouteTable(routes=sorted(routes, key=lambda r: r.app_id))


async def until_unrouted(ctx: Context, app_id: str, limit: float = 5.0) -> None:
    """Wait (up to ``limit``) until the edge running in this process, if any, has loaded a
    table without a route for ``app_id``: a deleted app's hosts then answer 404."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    with ctx.bus.subscribe("edge-applied") as applied:
        while True:
            table = ctx.edge_table
            left = deadline - loop.time()
            if table is None or all(r.app_id != app_id for r in table.routes) or left <= 0:
                return
            await applied.wait(min(left, 0.25))


def table_version(table: RouteTable) -> str:
    """A digest of the table: equal tables, equal versions (on every replica)."""
    return hashlib.sha256(dump_table(table).encode()).hexdigest()[:32]


def authenticate(ctx: Context, bearer: str | None) -> None:
    """An edge node presents a join token, or the node token of an agent on its machine."""
    for check in (nodes.authenticate_node, nodes.check_join_token):
        try:
            check(ctx, bearer)
            return
        except Unauthenticated:
            continue
    raise Unauthenticated("an edge node needs a valid join token or node token")


@dataclass(frozen=True, slots=True)
class VersionedTable:
    """The route table with its version and JSON form, made once per read."""

    table: RouteTable
    version: str
    payload: dict[str, Any]


def versioned_table(ctx: Context) -> VersionedTable:
    table = route_table(ctx)
    return VersionedTable(table=table, version=table_version(table), payload=table_to_dict(table))


def tables(ctx: Context) -> TopicMemo[VersionedTable]:
    """The route table as this process last read it, shared by the edge controller and
    every edge node's blocking query: read again once per "edge" notification, however
    many wait, instead of once per waiter (call from the event loop)."""
    memo = ctx.route_tables
    if memo is None:

        async def read() -> VersionedTable:
            return await run_in_threadpool(versioned_table, ctx)

        memo = ctx.route_tables = TopicMemo(ctx.bus, "edge", read)
    return memo


async def table_after(
    ctx: Context,
    version: str,
    wait: float,
    *,
    recheck: float = RECHECK_SECONDS,
    shared: TopicMemo[VersionedTable] | None = None,
) -> VersionedTable:
    """Blocking query: the table as soon as its version differs from ``version``, or the
    current one after ``wait`` seconds.

    Subscribed before the first read, so a change notified while a read runs wakes the
    wait at once; re-read at least every ``recheck`` seconds all the same, so a lost
    wake-up costs latency only. The answer is always a read begun after the query: never
    older than a change committed before it. Reads come from ``shared`` (by default
    :func:`tables`).
    """
    memo = shared or tables(ctx)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    asked = memo.mark()
    with ctx.bus.subscribe("edge") as wake:
        reading = await memo.get()
        while True:
            remaining = deadline - loop.time()
            if reading.value.version != version or remaining <= 0 or ctx.bus.closed:
                if reading.stamp.seq > asked:
                    return reading.value
                reading = await memo.get(after=asked)
                continue
            woken = await wake.wait(min(remaining, recheck))
            reading = await memo.get(max_age=None if woken else recheck)
