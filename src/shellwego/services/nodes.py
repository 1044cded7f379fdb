"""Nodes: list, inspect, drain; join tokens; agent registration and heartbeats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shellwego.errors import Conflict, Forbidden, NotFound, Unauthenticated
from shellwego.models import (
    SIZES,
    App,
    DesiredState,
    Instance,
    JoinToken,
    Node,
    NodeCapacity,
    NodeStatus,
    NodeView,
    new_id,
)
from shellwego.models.values import NodeCapabilities, NodeNetwork
from shellwego.runtime.microvm import RUNTIME as MICROVM
from shellwego.store import repository as repo

from . import placement
from .context import Context, Principal, wake_after_commit
from .tokens import JOIN_PREFIX, NODE_PREFIX, new_token, token_hash


def require_operator(who: Principal) -> None:
    """Nodes belong to the platform: only its operators (the bootstrap owner, and users
    flagged ``is_operator``) may see or change them."""
    if not who.is_operator:
        raise Forbidden("only a platform operator can manage nodes")


def find(s: Session, ref: str) -> Node:
    node = repo.get(s, Node, id=ref) or repo.get(s, Node, hostname=ref)
    if node is None:
        raise NotFound(f"node {ref!r} not found")
    return node


def views(s: Session, rows: Sequence[Node]) -> list[NodeView]:
    """``rows`` as the API shows them: what is still free on each and how many microVMs
    run there, from the instances placed on them (the reservations the scheduler counts),
    summed in one query for all of them."""
    taken = reservations(s, {n.id for n in rows})
    out = []
    for node in rows:
        cpu, memory, vms = taken.get(node.id, (0, 0, 0))
        free = NodeCapacity(
            cpu_millis=max(0, node.capacity.cpu_millis - cpu),
            memory_bytes=max(0, node.capacity.memory_bytes - memory),
        )
        out.append(
            NodeView(
                **node.model_dump(),
                free=free,
                microvm_capacity=microvm_slots(node.capacity, node.runtimes),
                microvm_used=vms,
            )
        )
    return out


def reservations(s: Session, node_ids: set[str]) -> dict[str, tuple[int, int, int]]:
    """Per node: the CPU and memory its instances meant to run reserve, and how many of
    them run as microVMs."""
    if not node_ids:
        return {}
    i = Instance.__table__.c  # type: ignore[attr-defined]
    a = App.__table__.c  # type: ignore[attr-defined]
    query = (
        sa.select(
            i.node_id,
            *placement.reserved(i),
            sa.func.sum(sa.case((a.runtime == MICROVM, 1), else_=0)),
        )
        .join_from(Instance.__table__, App.__table__, a.id == i.app_id)  # type: ignore[attr-defined]
        .where(i.desired_state == DesiredState.RUNNING.value, i.node_id.in_(sorted(node_ids)))
        .group_by(i.node_id)
    )
    return {
        node_id: (int(cpu), int(memory), int(vms)) for node_id, cpu, memory, vms in s.execute(query)
    }


def list_page(
    ctx: Context, who: Principal, cursor: str | None, limit: int, status: str | None = None
) -> repo.Page[NodeView]:
    require_operator(who)
    filters = {"status": status} if status else {}
    with ctx.db.session() as s:
        page = repo.page(s, Node, cursor=cursor, limit=limit, **filters)
        return repo.Page(items=views(s, page.items), next_cursor=page.next_cursor)


def get(ctx: Context, who: Principal, ref: str) -> NodeView:
    require_operator(who)
    with ctx.db.session() as s:
        return views(s, [find(s, ref)])[0]


def _set_status(ctx: Context, who: Principal, ref: str, status: NodeStatus) -> NodeView:
    require_operator(who)
    with ctx.db.session() as s:
        node = find(s, ref)
        node.status = status
        node.updated_at = ctx.clock.now()
        s.flush()
        shown = views(s, [node])[0]
    ctx.bus.notify("rollout")
    return shown


def drain(ctx: Context, who: Principal, ref: str) -> NodeView:
    """Mark a node draining: it gets no new instances and its instances move elsewhere."""
    return _set_status(ctx, who, ref, NodeStatus.DRAINING)


def uncordon(ctx: Context, who: Principal, ref: str) -> NodeView:
    return _set_status(ctx, who, ref, NodeStatus.READY)


def create_join_token(ctx: Context, name: str, secret: str | None = None) -> str:
    """A token agents use once to register; returns the secret (shown once)."""
    secret = secret or new_token(JOIN_PREFIX)
    with ctx.db.session() as s:
        hashed = token_hash(secret)
        if repo.get(s, JoinToken, token_hash=hashed) is not None:
            return secret
        now = ctx.clock.now()
        repo.add(
            s,
            JoinToken(
                id=new_id(),
                name=name,
                token_hash=hashed,
                revoked_at=None,
                created_at=now,
                updated_at=now,
            ),
            conflict="join token exists",
        )
    return secret


@dataclass(frozen=True, slots=True)
class Registration:
    node: Node
    node_token: str


def check_join_token(ctx: Context, join_token: str | None) -> None:
    with ctx.db.session() as s:
        jt = repo.get(s, JoinToken, token_hash=token_hash(join_token or ""))
        if jt is None or jt.revoked_at is not None:
            raise Unauthenticated("invalid join token")


def register(
    ctx: Context,
    join_token: str | None,
    hostname: str,
    capacity: NodeCapacity,
    runtimes: list[str],
    labels: Mapping[str, str],
    agent_version: str,
    address: str,
    *,
    kernel_version: str = "",
    capabilities: NodeCapabilities | None = None,
    runtime_reasons: Mapping[str, str] | None = None,
) -> Registration:
    check_join_token(ctx, join_token)
    with ctx.db.session() as s:
        if repo.get(s, Node, hostname=hostname) is not None:
            raise Conflict(
                f"a node named {hostname!r} is already registered; "
                "remove it first or start the agent with its saved identity"
            )
        secret = new_token(NODE_PREFIX)
        now = ctx.clock.now()
        node = Node(
            id=new_id(),
            hostname=hostname,
            status=NodeStatus.READY,
            region="local",
            zone=labels.get("zone", "local"),
            address=address,
            labels=dict(labels),
            capacity=capacity,
            runtimes=list(runtimes),
            runtime_reasons=dict(runtime_reasons or {}),
            agent_version=agent_version,
            kernel_version=kernel_version,
            capabilities=capabilities or NodeCapabilities(),
            network=NodeNetwork(),
            token_hash=token_hash(secret),
            assignment_index=1,
            last_heartbeat_at=now,
            created_at=now,
            updated_at=now,
        )
        repo.add(s, node, conflict=f"a node named {hostname!r} is already registered")
    ctx.bus.notify("rollout")
    return Registration(node=node, node_token=secret)


def microvm_slots(capacity: NodeCapacity, runtimes: Sequence[str]) -> int:
    """How many microVMs of the smallest size fit on a node that offers the runtime."""
    if MICROVM not in runtimes:
        return 0
    smallest = min(SIZES.values(), key=lambda r: r.memory_bytes)
    return min(
        capacity.memory_bytes // smallest.memory_bytes, capacity.cpu_millis // smallest.cpu_millis
    )


def authenticate_node(ctx: Context, bearer: str | None) -> Node:
    if not bearer or not bearer.startswith(NODE_PREFIX):
        raise Unauthenticated("invalid node token")
    with ctx.db.session() as s:
        node = repo.get(s, Node, token_hash=token_hash(bearer))
        if node is None:
            raise Unauthenticated("invalid node token")
        return node


def mark_down_stale(ctx: Context) -> list[str]:
    """Nodes whose heartbeats stopped are marked down (run again on a transient
    database conflict).

    Nothing is known of their instances any more: they stop counting as healthy at once
    (the edge stops routing to them, a rollout no longer counts them as serving) and the
    rollout controller replaces them on other nodes.
    """
    return ctx.db.retrying(lambda: _mark_down_stale(ctx))


def _mark_down_stale(ctx: Context) -> list[str]:
    now = ctx.clock.now()
    limit = now - timedelta(seconds=ctx.settings.node_down_after_seconds)
    changed = []
    with ctx.db.session() as s:
        # every node row, in id order, before any instance (the lock order), so that a
        # heartbeat arriving now is seen, or waits and brings its node back up after
        placement.lock_nodes(s)
        for node in repo.find_all(s, Node, Node.status != NodeStatus.DOWN.value):  # type: ignore[arg-type]
            if node.last_heartbeat_at is None or node.last_heartbeat_at < limit:
                node.status = NodeStatus.DOWN
                node.updated_at = now
                changed.append(node.id)
        if changed:
            lost = repo.find_all(
                s,
                Instance,
                Instance.node_id.in_(changed),  # type: ignore[attr-defined]
                desired_state=DesiredState.RUNNING.value,
            )
            for inst in lost:
                inst.healthy = False
                inst.state = "unknown"
                inst.updated_at = now
            wake_after_commit(ctx, s, "rollout", "edge")
    return changed
