"""Placement through the store: concurrent deploys never overcommit a node."""

from __future__ import annotations

import threading

import pytest

from shellwego.errors import CapacityError
from shellwego.models import (
    App,
    AppCreate,
    DesiredState,
    Instance,
    NodeCapacity,
    OrganizationCreate,
    Release,
    Resources,
    UserCreate,
)
from shellwego.services import agents, apps, auth, nodes, placement
from shellwego.services.context import Context
from shellwego.store import repository as repo
from support.releases import slug_release

MIB = 1024**2


def _setup(ctx: Context, app_count: int) -> list[tuple[str, str]]:
    boot = auth.bootstrap(
        ctx,
        UserCreate(email="o@example.com", name="O", password="a long enough password"),
        OrganizationCreate(name="O", slug="o"),
    )
    who = auth.authenticate(ctx, boot.token.secret)
    join = nodes.create_join_token(ctx, "t")
    nodes.register(
        ctx,
        join,
        "only-node",
        NodeCapacity(cpu_millis=1000, memory_bytes=1024 * MIB),
        ["process"],
        {},
        "test",
        "127.0.0.1",
    )
    out = []
    for n in range(app_count):
        app = apps.create(ctx, who, AppCreate(name=f"app{n}"))
        with ctx.db.session() as s:
            row = apps.find(s, who.organization_id, app.id)
            rel = slug_release(ctx, s, who, row, {"web": "x"}, digest="0" * 64)
            out.append((row.id, rel.id))
    return out


def _live(ctx: Context) -> list[Instance]:
    """Every instance meant to run."""
    with ctx.db.session() as s:
        return repo.find_all(s, Instance, desired_state=DesiredState.RUNNING.value)


def _place(ctx: Context, app_id: str, release_id: str, cpu: int) -> list[Instance]:
    with ctx.db.session() as s:
        app = repo.require(s, App, "app", id=app_id)
        release = repo.require(s, Release, "release", id=release_id)
        return placement.place(
            ctx,
            s,
            app,
            release,
            "web",
            1,
            Resources(cpu_millis=cpu, memory_bytes=256 * MIB),
            deployment_id=None,
        )


def test_two_concurrent_deploys_cannot_overcommit_a_node(ctx: Context) -> None:
    targets = _setup(ctx, 2)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def deploy(app_id: str, release_id: str) -> None:
        barrier.wait()
        try:
            _place(ctx, app_id, release_id, 600)
            outcomes.append("placed")
        except CapacityError as exc:
            outcomes.append(f"refused: {exc}")

    threads = [threading.Thread(target=deploy, args=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.split(":")[0] for o in outcomes) == ["placed", "refused"]
    refused = next(o for o in outcomes if o.startswith("refused"))
    assert "app app" in refused and "largest free slot left is 0.4 cores" in refused
    assert sum(i.resources.cpu_millis for i in _live(ctx)) == 600


def test_placements_get_distinct_ports_and_wake_the_node(ctx: Context) -> None:
    [(app_id, release_id)] = _setup(ctx, 1)
    with ctx.db.session() as s:
        node = repo.find_all(s, placement.Node)[0]
        index = node.assignment_index
    first = _place(ctx, app_id, release_id, 100)
    second = _place(ctx, app_id, release_id, 100)
    assert first[0].port != second[0].port
    with ctx.db.session() as s:
        assert repo.find_all(s, placement.Node)[0].assignment_index == index + 2


def test_capacity_error_changes_nothing(ctx: Context) -> None:
    [(app_id, release_id)] = _setup(ctx, 1)
    with pytest.raises(CapacityError, match="cannot place 1 instance"):
        _place(ctx, app_id, release_id, 5000)
    assert _live(ctx) == []


def _stop(ctx: Context, inst: Instance) -> None:
    with ctx.db.session() as s:
        placement.stop(ctx, s, [repo.require(s, Instance, "instance", id=inst.id)])


def _report(ctx: Context, **states: str) -> None:
    """The node's agent heartbeats, listing these instance ids in these states."""
    with ctx.db.session() as s:
        node = repo.find_all(s, placement.Node)[0]
    body = agents.Heartbeat(
        instances=[agents.ObservedInstance(instance_id=i, state=st) for i, st in states.items()]
    )
    agents.heartbeat(ctx, node, body)


def test_a_port_is_reused_only_once_its_old_instance_is_seen_gone(ctx: Context) -> None:
    [(app_id, release_id)] = _setup(ctx, 1)
    [old] = _place(ctx, app_id, release_id, 100)
    _report(ctx, **{old.id: "running"})
    _stop(ctx, old)  # asked to stop: it may still run through its grace period
    [second] = _place(ctx, app_id, release_id, 100)
    assert second.port != old.port
    _report(ctx, **{old.id: "running", second.id: "running"})  # still shutting down
    [third] = _place(ctx, app_id, release_id, 100)
    assert third.port not in (old.port, second.port)

    _report(ctx, **{old.id: "stopped", second.id: "running", third.id: "running"})
    [fourth] = _place(ctx, app_id, release_id, 100)
    assert fourth.port == old.port  # seen stopped: its port is free again

    _stop(ctx, fourth)
    [fifth] = _place(ctx, app_id, release_id, 100)
    assert fifth.port not in (second.port, third.port, fourth.port)
    # the agent removed it and no longer lists it: gone too
    _report(ctx, **{second.id: "running", third.id: "running", fifth.id: "running"})
    [sixth] = _place(ctx, app_id, release_id, 100)
    assert sixth.port == fourth.port
