"""Bridge between the database and the pure scheduler: snapshot, plan, commit.

The node lock is the guard against overcommit: placement runs inside one transaction that
first locks every node row (``FOR UPDATE`` on PostgreSQL; SQLite's write transaction is
taken up front with ``BEGIN IMMEDIATE``), and only then reads the instances and plans. A
concurrent deploy waits for the lock and plans from the state this one committed, so two
deploys can never both take the same room on a node.

A port on a node is taken until its instance has been seen gone: an instance asked to
stop keeps its port through its grace period, until its agent reports it stopped or no
longer lists it (see ``RELEASED_STATES``).

Lock order, everywhere: node rows before instance rows. A transaction that may write both
either locks the nodes it needs in id order before it writes an instance (``stop`` does),
or, for the controllers that may place, every node row before its first instance write
(:func:`nodes_first`). An agent's heartbeat writes its own node row first.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from shellwego import scheduler
from shellwego.errors import CapacityError
from shellwego.models import (
    App,
    DesiredState,
    Instance,
    Node,
    NodeStatus,
    ProcessFormation,
    Release,
    Resources,
    new_id,
)
from shellwego.store import repository as repo

from .context import Context, wake_after_commit

_NODES_FIRST = "shellwego_nodes_first"
_NODES_LOCKED = "shellwego_nodes_locked"


def lock_nodes(s: Session) -> None:
    """Lock every node row, in id order (PostgreSQL; SQLite's write transaction is
    exclusive already), once per transaction, without flushing this transaction's own
    changes before it."""
    if s.info.get(_NODES_LOCKED):
        return
    if s.get_bind().dialect.name == "postgresql":
        t = Node.__table__.c  # type: ignore[attr-defined]
        s.connection().execute(sa.select(t.id).order_by(t.id).with_for_update())
    s.info[_NODES_LOCKED] = True


def nodes_first(s: Session) -> None:
    """In ``s``, every node row is locked before the first write of an instance row
    (and ``stop``/``touch_nodes`` lock them all, not some): the lock order of a
    controller's transaction that may place, whatever it writes first."""
    if s.info.get(_NODES_FIRST):
        return
    s.info[_NODES_FIRST] = True

    def before_flush(session: Session, _context: Any, _instances: Any) -> None:
        if any(isinstance(o, Instance) for o in (*session.dirty, *session.new, *session.deleted)):
            lock_nodes(session)

    event.listen(s, "before_flush", before_flush)


def _lock_some(s: Session, node_ids: list[str]) -> None:
    """Lock these node rows in id order (all of them in a :func:`nodes_first` one)."""
    if s.info.get(_NODES_FIRST):
        lock_nodes(s)
    elif not s.info.get(_NODES_LOCKED) and s.get_bind().dialect.name == "postgresql":
        t = Node.__table__.c  # type: ignore[attr-defined]
        query = sa.select(t.id).where(t.id.in_(node_ids)).order_by(t.id).with_for_update()
        s.connection().execute(query)


def node_snapshots(s: Session, *, lock: bool) -> list[scheduler.NodeSnapshot]:
    """Every node as the scheduler sees it, read as plain columns in id order; with
    ``lock``, ``FOR UPDATE`` on PostgreSQL (SQLite's transaction is already exclusive)."""
    t = Node.__table__.c  # type: ignore[attr-defined]
    query = sa.select(
        t.id,
        t.status,
        sa.type_coerce(t.runtimes, sa.JSON),
        sa.type_coerce(t.labels, sa.JSON),
        sa.type_coerce(t.capacity, sa.JSON),
    ).order_by(t.id)
    if lock and s.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    if lock:
        s.info[_NODES_LOCKED] = True
    return [
        scheduler.NodeSnapshot(
            id=node_id,
            status=str(status),
            runtimes=frozenset(runtimes),
            labels=labels,
            allocatable=scheduler.Resources(
                cpu_millis=int(capacity["cpu_millis"]), memory_bytes=int(capacity["memory_bytes"])
            ),
        )
        for node_id, status, runtimes, labels, capacity in s.execute(query)
    ]


def reserved(instances: Any) -> tuple[Any, Any]:
    """The sums of the CPU and of the memory that rows of ``instances`` (the table's
    columns) reserve, for a grouped query; BIGINT: an instance may reserve over 2 GiB."""
    resources = sa.type_coerce(instances.resources, sa.JSON)
    return (
        sa.func.sum(sa.cast(resources["cpu_millis"].as_string(), sa.BigInteger)),
        sa.func.sum(sa.cast(resources["memory_bytes"].as_string(), sa.BigInteger)),
    )


def usage_snapshot(
    s: Session, nodes: list[scheduler.NodeSnapshot], app_id: str, deployment_id: str | None = None
) -> scheduler.Snapshot:
    """The scheduler's view for placing ``app_id``'s instances, summed by the database.

    Per node, the app's instances are summed per process type (the replica groups the
    planner spreads) and every other instance into one row (capacity is all the planner
    needs of them): the same plan as one row per instance, at a cost that grows with the
    nodes, not with the instances, so it stays flat as the cluster fills.

    The app's instances are also told apart by whether they are peers of the new ones
    (see :func:`free_ordinals`): those of ``deployment_id``, else those not draining.
    Instances a rollout replaces are no peers, so ``spread`` evens out the new ones
    instead of filling the node the old ones left emptiest.
    """
    t = Instance.__table__.c  # type: ignore[attr-defined]
    group = sa.case((t.app_id == app_id, t.process_type), else_=sa.null())
    stays = (
        t.deployment_id == deployment_id
        if deployment_id is not None
        else t.drain_started_at.is_(None)
    )
    peer = sa.case((sa.and_(t.app_id == app_id, stays), 1), else_=0)
    query = (
        sa.select(t.node_id, group, peer, sa.func.count(), *reserved(t))
        .where(t.desired_state == DesiredState.RUNNING.value)
        .group_by(t.node_id, group, peer)
    )
    return scheduler.Snapshot(
        nodes=nodes,
        instances=[
            scheduler.InstanceSnapshot(
                id=f"{node_id}/{process_type or '*'}/{'peers' if is_peer else 'others'}",
                app_id=app_id if process_type is not None else "",
                process_type=process_type or "",
                release_id="",
                node_id=node_id,
                resources=scheduler.Resources(cpu_millis=int(cpu), memory_bytes=int(memory)),
                peers=int(how_many) if is_peer else 0,
            )
            for node_id, process_type, is_peer, how_many, cpu, memory in s.execute(query)
        ],
    )


# observed states of an instance that no longer holds its port (``removed``: its agent
# stopped listing it after it was asked to stop)
RELEASED_STATES = ("stopped", "exited", "removed")


def used_ports(s: Session, node_ids: set[str]) -> dict[str, set[int]]:
    """Ports on ``node_ids`` held by instances meant to run or not yet seen gone, and those
    their hosts' other programs were found holding."""
    t = Instance.__table__.c  # type: ignore[attr-defined]
    used: dict[str, set[int]] = defaultdict(set)
    if not node_ids:
        return used
    for node in repo.find_all(s, Node, Node.id.in_(sorted(node_ids))):  # type: ignore[attr-defined]
        used[node.id].update(node.network.busy_ports)
    query = sa.select(t.node_id, t.port).where(
        t.node_id.in_(sorted(node_ids)),
        sa.or_(t.desired_state == DesiredState.RUNNING.value, t.state.not_in(RELEASED_STATES)),
    )
    for node_id, port in s.execute(query):
        used[node_id].add(port)
    return used


def touch_nodes(ctx: Context, s: Session, node_ids: set[str], *, locked: bool = False) -> None:
    """Bump the nodes' assignment index and wake their agents after commit.

    ``locked``: the transaction already holds the nodes' rows (``place`` locks them all);
    otherwise they are locked here in id order, as ``place`` does, so no two transactions
    wait on each other's nodes.
    """
    if not node_ids:
        return
    t = Node.__table__.c  # type: ignore[attr-defined]
    ids = sorted(node_ids)
    if not locked:
        _lock_some(s, ids)
    s.execute(
        sa.update(Node.__table__)  # type: ignore[attr-defined]
        .where(t.id.in_(ids))
        .values(assignment_index=t.assignment_index + 1)
    )
    wake_after_commit(ctx, s, *(f"node:{nid}" for nid in ids))


def request_for(
    app: App, release_id: str, process_type: str, count: int, resources: Resources
) -> scheduler.PlacementRequest:
    """The scheduler's request for instances of ``app``, under the app's placement policy."""
    return scheduler.PlacementRequest(
        app_id=app.id,
        process_type=process_type,
        release_id=release_id,
        count=count,
        resources=scheduler.Resources(
            cpu_millis=resources.cpu_millis, memory_bytes=resources.memory_bytes
        ),
        runtime=app.runtime,
        constraints=dict(app.placement.constraints),
        strategy=app.placement.strategy,
    )


def _named(app: App, exc: CapacityError) -> CapacityError:
    """``exc`` naming the app as its users know it."""
    return CapacityError(exc.detail.replace(f"app {app.id}", f"app {app.name}"), **exc.extra)


def plan_for(
    app: App, snapshot: scheduler.Snapshot, requests: list[scheduler.PlacementRequest]
) -> scheduler.Plan:
    """``scheduler.plan``, with a capacity error naming the app as its users know it."""
    try:
        return scheduler.plan(snapshot, requests)
    except CapacityError as exc:
        raise _named(app, exc) from None


def eligible(node: Node | None, app: App) -> bool:
    """Whether ``node`` may run ``app``'s instances: ready, its runtime, its labels."""
    return node is not None and scheduler.eligible(node, app.runtime, app.placement.constraints)


def check_constraints(s: Session, app: App) -> None:
    """Refuse placement constraints that no ready node satisfies (naming them)."""
    wanted = app.placement.constraints
    if not wanted:
        return
    nodes = repo.find_all(s, Node, status=NodeStatus.READY.value)
    if any(eligible(n, app) for n in nodes):
        return
    asked = ", ".join(f"{k}={v}" for k, v in sorted(wanted.items()))
    seen = sorted({f"{k}={v}" for n in nodes for k, v in n.labels.items()})
    offered = ", ".join(seen[:20]) if seen else "none"
    raise CapacityError(
        f"no ready node offering runtime {app.runtime!r} has the labels {asked} "
        f"(placement constraints of app {app.name}); labels on ready nodes: {offered}",
        constraints=dict(wanted),
    )


def check_formation(
    s: Session,
    app: App,
    release: Release,
    before: dict[str, ProcessFormation],
    after: dict[str, ProcessFormation],
    *,
    moved: bool = False,
) -> None:
    """Refuse a formation change that cannot be placed on the nodes as they are now.

    Counts what the change will need once rolled out: a process type keeps its instances
    on eligible nodes and needs only the missing ones, unless it is resized (or
    ``moved``, after a placement policy change), when all of its instances are replaced.
    Advisory: nothing is locked; the rollout places under the lock later.
    """
    nodes = repo.find_all(s, Node)
    by_id = {n.id: n for n in nodes}
    kept: dict[str, int] = defaultdict(int)
    for inst in repo.find_all(
        s, Instance, app_id=app.id, release_id=release.id, desired_state=DesiredState.RUNNING.value
    ):
        node = by_id.get(inst.node_id)
        if inst.drain_started_at is None and eligible(node, app):
            kept[inst.process_type] += 1
    replaced: set[str] = set()
    requests = []
    for ptype, wanted in sorted(after.items()):
        old = before.get(ptype)
        if ptype not in release.process_types or wanted.count == 0:
            continue
        if old == wanted and not moved:
            continue
        fresh = moved or (old is not None and old.resources != wanted.resources)
        if fresh:
            replaced.add(ptype)
        need = wanted.count - (0 if fresh else kept[ptype])
        if need > 0:
            requests.append(request_for(app, release.id, ptype, need, wanted.resources))
    if not requests:
        return
    snap = usage_snapshot(s, node_snapshots(s, lock=False), app.id)
    others = [i for i in snap.instances if not (i.app_id == app.id and i.process_type in replaced)]
    try:
        plan_for(app, scheduler.Snapshot(nodes=snap.nodes, instances=others), requests)
    except CapacityError as exc:
        ptype = str(exc.extra.get("process_type", ""))
        wanted = after[ptype]
        raise CapacityError(
            f"cannot run {wanted.count} {ptype} instance{'s' if wanted.count != 1 else ''} "
            f"of size {wanted.size} for app {app.name} on the nodes as they are now: "
            f"{exc.detail}",
            **exc.extra,
        ) from None


@dataclass(frozen=True, slots=True)
class Placed:
    """A new instance, as inserted."""

    id: str
    node_id: str
    port: int


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
) -> list[Placed]:
    """Place ``count`` new instances; all or nothing; raises :class:`CapacityError`."""
    made, error = place_most(
        ctx,
        s,
        app,
        release,
        process_type,
        count,
        resources,
        deployment_id=deployment_id,
        whole=True,
    )
    if error is not None:
        raise error
    return made


def place_most(
    ctx: Context,
    s: Session,
    app: App,
    release: Release,
    process_type: str,
    count: int,
    resources: Resources,
    *,
    deployment_id: str | None,
    whole: bool = False,
) -> tuple[list[Placed], CapacityError | None]:
    """Place ``count`` new instances, or as many as fit: those placed, and why not all
    (``None`` when all fit). One lock and one snapshot, however many fit. With ``whole``,
    nothing is placed unless all fit.

    Rows are read and written as plain columns (no ORM objects): at thousands of nodes
    and instances, hydrating them would cost more than the placement itself.
    """
    if count <= 0:
        return [], None
    lock_nodes(s)  # before this transaction's own instance writes go out: the lock order
    s.flush()  # this transaction's own changes (instances stopped just now) count
    nodes = node_snapshots(s, lock=True)  # the guard: see the module's docstring
    snap = usage_snapshot(s, nodes, app.id, deployment_id)
    request = request_for(app, release.id, process_type, count, resources)
    error: CapacityError | None = None
    if whole:
        placements = plan_for(app, snap, [request]).placements  # raises when not all fit
    else:
        placements, shortfall = scheduler.Planner(snap).place_most(request)
        error = shortfall and _named(app, shortfall)
    node_ids = {p.node_id for p in placements}
    used = used_ports(s, node_ids)
    ordinals = free_ordinals(s, app.id, process_type, deployment_id)
    low, high = ctx.settings.instance_ports
    now = ctx.clock.now()
    rows: list[dict[str, object]] = []
    made: list[Placed] = []
    for p in placements:
        port = next((n for n in range(low, high + 1) if n not in used[p.node_id]), None)
        if port is None:
            error = CapacityError(f"node {p.node_id} has no free instance port in {low}-{high}")
            if whole:
                return [], error
            break
        used[p.node_id].add(port)
        made.append(Placed(id=new_id(), node_id=p.node_id, port=port))
        rows.append(
            {
                "id": made[-1].id,
                "app_id": app.id,
                "organization_id": app.organization_id,
                "release_id": release.id,
                "node_id": p.node_id,
                "process_type": process_type,
                "resources": resources,
                "port": port,
                "desired_state": DesiredState.RUNNING,
                "state": "pending",
                "healthy": False,
                "restarts": 0,
                "exit_code": None,
                "pid": None,
                "last_error": None,
                "observed_at": None,
                "healthy_at": None,
                "drain_started_at": None,
                "deployment_id": deployment_id,
                "ordinal": next(ordinals),
                "created_at": now,
                "updated_at": now,
            }
        )
    if rows:
        s.execute(sa.insert(Instance.__table__), rows)  # type: ignore[attr-defined]
    touch_nodes(ctx, s, {p.node_id for p in made}, locked=True)
    return made, error


def free_ordinals(
    s: Session, app_id: str, process_type: str, deployment_id: str | None
) -> Iterator[int]:
    """The numbers new instances of ``process_type`` get (``DYNO=web.1``), lowest first: those
    their peers leave free. A deployment's instances are numbered among themselves (they
    replace the others: ``web.1`` again, as after a Heroku deploy); others among the
    process type's serving instances (a replacement takes the number that went away)."""
    columns = Instance.__table__.c  # type: ignore[attr-defined]
    query = sa.select(columns.ordinal).where(
        columns.app_id == app_id,
        columns.process_type == process_type,
        columns.desired_state == DesiredState.RUNNING.value,
        columns.drain_started_at.is_(None),
        columns.ordinal.is_not(None),
    )
    if deployment_id is not None:
        query = query.where(columns.deployment_id == deployment_id)
    taken = set(s.execute(query).scalars())
    return (n for n in itertools.count(1) if n not in taken)


def stop(ctx: Context, s: Session, instances: list[Instance]) -> None:
    """Stop instances now (desired state stopped); their agents are woken. Their nodes
    are locked (and their assignment index bumped) before the instances are written."""
    if not instances:
        return
    with s.no_autoflush:
        touch_nodes(ctx, s, {i.node_id for i in instances})
    now = ctx.clock.now()
    for inst in instances:
        inst.desired_state = DesiredState.STOPPED
        inst.updated_at = now
    wake_after_commit(ctx, s, "edge")


def begin_drain(ctx: Context, s: Session, instances: list[Instance]) -> None:
    """Take instances out of the load balancer; the rollout stops them after the drain period."""
    now = ctx.clock.now()
    for inst in instances:
        if inst.drain_started_at is None:
            inst.drain_started_at = now
            inst.updated_at = now
    wake_after_commit(ctx, s, "edge")


__all__ = [
    "CapacityError",
    "Placed",
    "begin_drain",
    "check_constraints",
    "check_formation",
    "eligible",
    "lock_nodes",
    "node_snapshots",
    "nodes_first",
    "place",
    "place_most",
    "stop",
    "touch_nodes",
]
