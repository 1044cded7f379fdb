"""Nodes: list, inspect, drain; join tokens; agent registration and heartbeats."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from shellwego.errors import Conflict, Forbidden, NotFound, Unauthenticated
from shellwego.models import JoinToken, Node, NodeCapacity, NodeStatus, new_id
from shellwego.store import repository as repo

from .context import Context, Principal
from .tokens import JOIN_PREFIX, NODE_PREFIX, new_token, token_hash


def require_operator(who: Principal) -> None:
    if not who.is_operator:
        raise Forbidden("only a platform operator can manage nodes")


def find(s: Session, ref: str) -> Node:
    node = repo.get(s, Node, id=ref) or repo.get(s, Node, hostname=ref)
    if node is None:
        raise NotFound(f"node {ref!r} not found")
    return node


def list_page(
    ctx: Context, cursor: str | None, limit: int, status: str | None = None
) -> repo.Page[Node]:
    filters = {"status": status} if status else {}
    with ctx.db.session() as s:
        return repo.page(s, Node, cursor=cursor, limit=limit, **filters)


def get(ctx: Context, ref: str) -> Node:
    with ctx.db.session() as s:
        return find(s, ref)


def drain(ctx: Context, who: Principal, ref: str) -> Node:
    """Mark a node draining: it gets no new instances and its instances move elsewhere."""
    require_operator(who)
    with ctx.db.session() as s:
        node = find(s, ref)
        node.status = NodeStatus.DRAINING
        node.updated_at = ctx.clock.now()
    ctx.bus.notify("scheduler")
    return node


def uncordon(ctx: Context, who: Principal, ref: str) -> Node:
    require_operator(who)
    with ctx.db.session() as s:
        node = find(s, ref)
        node.status = NodeStatus.READY
        node.updated_at = ctx.clock.now()
    ctx.bus.notify("scheduler")
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
            token_hash=token_hash(secret),
            assignment_index=1,
            last_heartbeat_at=now,
            created_at=now,
            updated_at=now,
        )
        repo.add(s, node, conflict=f"a node named {hostname!r} is already registered")
    ctx.bus.notify("scheduler")
    return Registration(node=node, node_token=secret)


def authenticate_node(ctx: Context, bearer: str | None) -> Node:
    if not bearer or not bearer.startswith(NODE_PREFIX):
        raise Unauthenticated("invalid node token")
    with ctx.db.session() as s:
        node = repo.get(s, Node, token_hash=token_hash(bearer))
        if node is None:
            raise Unauthenticated("invalid node token")
        return node


def mark_down_stale(ctx: Context) -> list[str]:
    """Nodes whose heartbeats stopped are marked down (their instances get re-planned)."""
    limit = ctx.clock.now() - timedelta(seconds=ctx.settings.node_down_after_seconds)
    changed = []
    with ctx.db.session() as s:
        for node in repo.find_all(s, Node, Node.status != NodeStatus.DOWN.value):  # type: ignore[arg-type]
            if node.last_heartbeat_at is None or node.last_heartbeat_at < limit:
                node.status = NodeStatus.DOWN
                node.updated_at = ctx.clock.now()
                changed.append(node.id)
    if changed:
        ctx.bus.notify("scheduler")
    return changed
