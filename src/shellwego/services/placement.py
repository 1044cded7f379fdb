"""Bridge between the database and the pure scheduler: snapshot, plan, verify, commit.

Placement runs inside one transaction that first locks the node rows (``FOR UPDATE`` on
PostgreSQL; SQLite's write transaction is exclusive), re-reads the instances, plans, and
verifies the plan against that fresh state, so two concurrent deploys can never
overcommit a node.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shellwego import scheduler
from shellwego.errors import CapacityError
from shellwego.models import (
    App,
    DesiredState,
    Instance,
    Node,
    NodeStatus,
    Release,
    Resources,
    new_id,
)
from shellwego.store import repository as repo

from .context import Context, wake_after_commit


def live_instances(s: Session) -> list[Instance]:
    return repo.find_all(s, Instance, desired_state=DesiredState.RUNNING.value)


@dataclass(frozen=True, slots=True)
class LiveInstance:
    """The columns placement needs of a running instance (read without ORM objects)."""

    id: str
    app_id: str
    process_type: str
    release_id: str
    node_id: str
    port: int
    cpu_millis: int
    memory_bytes: int


def live_rows(s: Session) -> list[LiveInstance]:
    """Every instance meant to run, as plain rows: one query, cheap at 10,000s of rows."""
    t = Instance.__table__.c  # type: ignore[attr-defined]
    query = sa.select(
        t.id,
        t.app_id,
        t.process_type,
        t.release_id,
        t.node_id,
        t.port,
        sa.type_coerce(t.resources, sa.JSON),
    ).where(t.desired_state == DesiredState.RUNNING.value)
    return [
        LiveInstance(
            id=row[0],
            app_id=row[1],
            process_type=row[2],
            release_id=row[3],
            node_id=row[4],
            port=row[5],
            cpu_millis=int(row[6]["cpu_millis"]),
            memory_bytes=int(row[6]["memory_bytes"]),
        )
        for row in s.execute(query)
    ]


def usage_snapshot(s: Session, nodes: list[Node]) -> scheduler.Snapshot:
    """The scheduler's view, with instances summed per (node, app, process type) by the
    database: the same free capacity and replica groups as one row per instance, at a
    cost that does not grow with the number of instances of a group."""
    t = Instance.__table__.c  # type: ignore[attr-defined]
    resources = sa.type_coerce(t.resources, sa.JSON)
    query = (
        sa.select(
            t.node_id,
            t.app_id,
            t.process_type,
            sa.func.sum(resources["cpu_millis"].as_integer()),
            sa.func.sum(resources["memory_bytes"].as_integer()),
        )
        .where(t.desired_state == DesiredState.RUNNING.value)
        .group_by(t.node_id, t.app_id, t.process_type)
    )
    base = take_snapshot(s, nodes, live=[])
    return scheduler.Snapshot(
        nodes=base.nodes,
        instances=[
            scheduler.InstanceSnapshot(
                id=f"{node_id}/{app_id}/{process_type}",
                app_id=app_id,
                process_type=process_type,
                release_id="",
                node_id=node_id,
                resources=scheduler.Resources(cpu_millis=int(cpu), memory_bytes=int(memory)),
            )
            for node_id, app_id, process_type, cpu, memory in s.execute(query)
        ],
    )


def used_ports(s: Session, node_ids: set[str]) -> dict[str, set[int]]:
    """Ports taken by instances meant to run on ``node_ids``."""
    t = Instance.__table__.c  # type: ignore[attr-defined]
    used: dict[str, set[int]] = defaultdict(set)
    if not node_ids:
        return used
    query = sa.select(t.node_id, t.port).where(
        t.desired_state == DesiredState.RUNNING.value, t.node_id.in_(sorted(node_ids))
    )
    for node_id, port in s.execute(query):
        used[node_id].add(port)
    return used


def take_snapshot(
    s: Session, nodes: list[Node], live: list[LiveInstance] | None = None
) -> scheduler.Snapshot:
    rows = live_rows(s) if live is None else live
    return scheduler.Snapshot(
        nodes=[
            scheduler.NodeSnapshot(
                id=n.id,
                status=str(n.status),
                runtimes=frozenset(n.runtimes),
                labels=dict(n.labels),
                allocatable=scheduler.Resources(
                    cpu_millis=n.capacity.cpu_millis, memory_bytes=n.capacity.memory_bytes
                ),
            )
            for n in nodes
        ],
        instances=[
            scheduler.InstanceSnapshot(
                id=i.id,
                app_id=i.app_id,
                process_type=i.process_type,
                release_id=i.release_id,
                node_id=i.node_id,
                resources=scheduler.Resources(cpu_millis=i.cpu_millis, memory_bytes=i.memory_bytes),
            )
            for i in rows
        ],
    )


def touch_nodes(
    ctx: Context, s: Session, node_ids: set[str], locked: list[Node] | None = None
) -> None:
    """Bump the nodes' assignment index and wake their agents after commit.

    ``locked``: the nodes, already read FOR UPDATE in this transaction (saves a query).
    """
    if not node_ids:
        return
    rows = locked if locked is not None else repo.lock(s, Node, sorted(node_ids))
    for node in rows:
        if node.id in node_ids:
            node.assignment_index += 1
    topics = [f"node:{nid}" for nid in sorted(node_ids)]
    wake_after_commit(ctx, s, *topics)


def place(
    ctx: Context,
    s: Session,
    app: App,
    release: Release,
    process_type: str,
    count: int,
    resources: Resources,
    *,
    deployment_id: str | None,
) -> list[Instance]:
    """Place ``count`` new instances; all or nothing; raises :class:`CapacityError`."""
    if count <= 0:
        return []
    nodes = repo.lock_all(s, Node)
    snap = usage_snapshot(s, nodes)
    request = scheduler.PlacementRequest(
        app_id=app.id,
        process_type=process_type,
        release_id=release.id,
        count=count,
        resources=scheduler.Resources(
            cpu_millis=resources.cpu_millis, memory_bytes=resources.memory_bytes
        ),
        runtime=app.runtime,
    )
    try:
        plan = scheduler.plan(snap, [request])
    except CapacityError as exc:  # name the app as its users know it
        raise CapacityError(
            exc.detail.replace(f"app {app.id}", f"app {app.name}"), **exc.extra
        ) from None
    over = scheduler.verify(plan, snap)
    if over:
        raise CapacityError(f"placement would overcommit nodes {', '.join(over)}; retry")
    node_ids = {p.node_id for p in plan.placements}
    used = used_ports(s, node_ids)
    now = ctx.clock.now()
    created = []
    for p in plan.placements:
        low, high = ctx.settings.instance_ports
        port = next((n for n in range(low, high + 1) if n not in used[p.node_id]), None)
        if port is None:
            raise CapacityError(f"node {p.node_id} has no free instance port in {low}-{high}")
        used[p.node_id].add(port)
        inst = Instance(
            id=new_id(),
            app_id=app.id,
            organization_id=app.organization_id,
            release_id=release.id,
            node_id=p.node_id,
            process_type=process_type,
            resources=resources,
            port=port,
            desired_state=DesiredState.RUNNING,
            state="pending",
            healthy=False,
            restarts=0,
            exit_code=None,
            pid=None,
            last_error=None,
            observed_at=None,
            healthy_at=None,
            drain_started_at=None,
            deployment_id=deployment_id,
            created_at=now,
            updated_at=now,
        )
        s.add(inst)
        created.append(inst)
    s.flush()
    touch_nodes(ctx, s, node_ids, nodes)
    return created


def stop(ctx: Context, s: Session, instances: list[Instance]) -> None:
    """Stop instances now (desired state stopped); their agents are woken."""
    now = ctx.clock.now()
    for inst in instances:
        inst.desired_state = DesiredState.STOPPED
        inst.updated_at = now
    touch_nodes(ctx, s, {i.node_id for i in instances})
    wake_after_commit(ctx, s, "edge")


def begin_drain(ctx: Context, s: Session, instances: list[Instance]) -> None:
    """Take instances out of the load balancer; the rollout stops them after the drain period."""
    now = ctx.clock.now()
    for inst in instances:
        if inst.drain_started_at is None:
            inst.drain_started_at = now
            inst.updated_at = now
    wake_after_commit(ctx, s, "edge")


def ready_nodes(s: Session) -> list[Node]:
    return repo.find_all(s, Node, status=NodeStatus.READY.value)


__all__ = ["CapacityError", "begin_drain", "place", "stop", "take_snapshot", "touch_nodes"]
