"""Node rows are locked before instance rows in every transaction that writes both, and a
transient database conflict is retried inside the service instead of reaching the agent."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from shellwego.models import Node
from shellwego.services import agents, apps, nodes, processes
from shellwego.store import Database

from .world import World


@contextmanager
def transactions(db: Database) -> Iterator[list[list[str]]]:
    """The statements of every transaction begun meanwhile, one list per transaction."""
    seen: list[list[str]] = []
    current: dict[int, list[str]] = {}

    def begin(conn: Any) -> None:
        log: list[str] = []
        current[id(conn.connection.dbapi_connection)] = log
        seen.append(log)

    def statement(conn: Any, _cursor: Any, text: str, *_args: Any) -> None:
        log = current.get(id(conn.connection.dbapi_connection))
        if log is not None:
            log.append(" ".join(text.split()))

    event.listen(db.engine, "begin", begin)
    event.listen(db.engine, "before_cursor_execute", statement)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", statement)
        event.remove(db.engine, "begin", begin)


def _locks_nodes(text: str) -> bool:
    return text.startswith("UPDATE nodes") or (" FROM nodes" in text and "FOR UPDATE" in text)


def _writes_instances(text: str) -> bool:
    return text.startswith(("UPDATE instances", "INSERT INTO instances", "DELETE FROM instances"))


def test_every_transaction_locks_nodes_before_instances(backend: str, world: World) -> None:
    if backend != "postgres":
        pytest.skip("row locks are PostgreSQL's; a SQLite write transaction is exclusive")
    with transactions(world.ctx.db) as seen:
        processes.update_formation(world.ctx, world.who, "web", {"web": 3})
        world.healthy_releases = {1, 2}
        world.release()
        for _ in range(6):
            world.step()
        world.release()  # a rolling deploy: place, drain, stop
        for _ in range(6):
            world.step()
        processes.update_formation(world.ctx, world.who, "web", {"web": 1})  # drains
        for _ in range(6):
            world.step()
        world.silent = {world.node_ids["node-0"]}  # a node goes down
        world.clock.advance(world.ctx.settings.node_down_after_seconds + 1)
        world.agents_report()
        assert nodes.mark_down_stale(world.ctx) == [world.node_ids["node-0"]]
        for _ in range(4):
            world.step()
        apps.delete(world.ctx, world.who, "web")
        for _ in range(4):
            world.step()
    both = 0
    for statements in seen:
        writes = [n for n, text in enumerate(statements) if _writes_instances(text)]
        if not writes:
            continue
        locks = [n for n, text in enumerate(statements) if _locks_nodes(text)]
        if locks:
            both += 1
            assert locks[0] < writes[0], "\n".join(statements)
    assert both > 10  # heartbeats, rollout steps, drains, liveness and the delete all did


def test_a_heartbeat_waits_out_a_lock_timeout_and_succeeds(
    backend: str, world: World, settings: Any
) -> None:
    """The database answers "busy" (here a lock timeout while another transaction holds the
    node's row; a deadlock or a serialization failure alike): the heartbeat is retried
    and succeeds once the row is free, never an error for the agent."""
    if backend != "postgres":
        pytest.skip("a lock timeout is PostgreSQL's; SQLite waits on its busy timeout")
    impatient = Database(settings.database_url, lock_timeout=0.05)
    ctx = dataclasses.replace(world.ctx, db=impatient)
    node_id = world.node_ids["node-0"]
    failures: list[str] = []
    released = threading.Event()

    @event.listens_for(impatient.engine, "handle_error")
    def _failed(context: Any) -> None:
        failures.append(getattr(context.original_exception, "sqlstate", ""))
        if not released.is_set():
            holder.rollback()
            released.set()

    holder = world.ctx.db.engine.connect()
    nodes_table = Node.__table__.c  # type: ignore[attr-defined]
    holder.execute(
        sa.select(nodes_table.id).where(nodes_table.id == node_id).with_for_update()
    )
    try:
        with world.ctx.db.session() as s:
            node = s.get(Node, node_id)
        assert node is not None
        world.clock.advance(1)  # a heartbeat with news: its node row is written
        beat = agents.heartbeat(ctx, node, agents.Heartbeat())
        assert beat.id == node_id
    finally:
        holder.close()
        impatient.dispose()
    assert failures and failures[0] == "55P03"  # lock_not_available, then retried
