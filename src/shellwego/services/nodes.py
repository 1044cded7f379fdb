"""Nodes: list, inspect, drain; join tokens; agent registration and heartbeats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

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
    new_id,
)
from shellwego.models.values import NodeCapabilities, NodeNetwork
from shellwego.runtime.microvm import RUNTIME as MICROVM
from shellwego.store import repository as repo

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


def list_page(
    ctx: Context, who: Principal, cursor: str | None, limit: int, status: str | None = None
) -> repo.Page[Node]:
    require_operator(who)
    filters = {"status": status} if status else {}
    with ctx.db.session() as s:
        return repo.page(s, Node, cursor=cursor, limit=limit, **filters)


def get(ctx: Context, who: Principal, ref: str) -> Node:
    require_operator(who)
    with ctx.db.session() as s:
        return find(s, ref)


def drain(ctx: Context, who: Principal, ref: str) -> Node:
    """Mark a node draining: it gets no new instances and its instances move elsewhere."""
    require_operator(who)
    with ctx.db.session() as s:
        node = find(s, ref)
        node.status = NodeStatus.DRAINING
        node.updated_at = ctx.clock.now()
    ctx.bus.notify("rollout")
    return node


def uncordon(ctx: Context, who: Principal, ref: str) -> Node:
    require_operator(who)
    with ctx.db.session() as s:
        node = find(s, ref)
        node.status = NodeStatus.READY
        node.updated_at = ctx.clock.now()
    ctx.bus.notify("rollout")
    return node


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
            agent_version=agent_version,
            kernel_version=kernel_version,
            capabilities=capabilities or NodeCapabilities(),
            network=NodeNetwork(),
            allocatable=capacity,
            microvm_capacity=microvm_slots(capacity, runtimes),
            microvm_used=0,
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


def refresh_allocation(s: Session, node: Node) -> None:
    """Set what is still free on ``node`` (its allocatable resources) and how many microVMs
    run there, from the instances placed on it: the reservations the scheduler counts."""
    placed = repo.find_all(s, Instance, node_id=node.id, desired_state=DesiredState.RUNNING.value)
    cpu = sum(i.resources.cpu_millis for i in placed)
    memory = sum(i.resources.memory_bytes for i in placed)
    allocatable = NodeCapacity(
        cpu_millis=max(0, node.capacity.cpu_millis - cpu),
        memory_bytes=max(0, node.capacity.memory_bytes - memory),
    )
    if allocatable != node.allocatable:
        node.allocatable = allocatable
    app_ids = sorted({i.app_id for i in placed})
    vm_apps = (
        {a.id for a in repo.find_all(s, App, App.id.in_(app_ids), runtime=MICROVM)}  # type: ignore[attr-defined]
        if app_ids
        else set()
    )
    node.microvm_used = sum(1 for i in placed if i.app_id in vm_apps)
    node.microvm_capacity = microvm_slots(node.capacity, node.runtimes)


def authenticate_node(ctx: Context, bearer: str | None) -> Node:
    if not bearer or not bearer.startswith(NODE_PREFIX):
        raise Unauthenticated("invalid node token")
    with ctx.db.session() as s:
        node = repo.get(s, Node, token_hash=token_hash(bearer))
        if node is None:
            raise Unauthenticated("invalid node token")
        return node


def mark_down_stale(ctx: Context) -> list[str]:
    """Nodes whose heartbeats stopped are marked down.

    Nothing is known of their instances any more: they stop counting as healthy at once
    (the edge stops routing to them, a rollout no longer counts them as serving) and the
    rollout controller replaces them on other nodes.
    """
    now = ctx.clock.now()
    limit = now - timedelta(seconds=ctx.settings.node_down_after_seconds)
    changed = []
    with ctx.db.session() as s:
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
