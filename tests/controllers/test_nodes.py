"""Drains and down nodes: their instances are re-planned on other nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from shellwego.controllers import loops, rollout
from shellwego.controllers.cluster import RETRY_UNCHANGED_SECONDS
from shellwego.models import Instance, NodeCapacity
from shellwego.services import apps, nodes, processes
from shellwego.services.context import Context
from shellwego.store import repository as repo
from support.waiting import POLL, PROMPTLY

from .world import GIB, World


def deploy(world: World, formation: dict[str, object]) -> None:
    processes.update_formation(world.ctx, world.who, "web", formation)
    world.healthy_releases = {1}
    _, first = world.release()
    for _ in range(10):
        world.step()
    assert world.deployment(first).status == "succeeded"


def address(world: World, inst: Instance) -> str:
    node = world.node_ids
    return f"10.0.0.{1 + list(node.values()).index(inst.node_id)}:{inst.port}"


def test_a_drained_node_hands_its_instances_over_without_a_gap(world: World) -> None:
    deploy(world, {"web": 2})
    assert world.placed_on() == ["node-0", "node-1"]  # replicas on distinct nodes
    nodes.drain(world.ctx, world.who, "node-0")
    rollout.pass_once(world.ctx)  # the replacement is placed; no agent has reported it yet
    # the drained node's instance keeps serving until its replacement is healthy
    assert world.placed_on() == ["node-0", "node-1", "node-1"]
    assert len(world.serving()) == 2
    for _ in range(5):
        world.step()
        assert len(world.serving()) >= 1
    assert world.placed_on() == ["node-1", "node-1"]
    assert len(world.serving()) == 2


async def test_a_drain_wakes_the_rollout_at_once(world: World) -> None:
    await world.ctx.bus.start()
    deploy(world, {"web": 2})
    stop = asyncio.Event()
    # an interval far longer than the test: only a wake-up can explain a prompt re-plan
    loop = asyncio.create_task(loops.rollout_loop(world.ctx, stop, interval=POLL))
    try:
        await asyncio.sleep(0.3)  # its first pass is done, it is waiting
        started = time.monotonic()
        await asyncio.to_thread(nodes.drain, world.ctx, world.who, "node-0")
        while world.placed_on() != ["node-0", "node-1", "node-1"]:
            assert time.monotonic() - started < PROMPTLY, world.placed_on()
            await asyncio.sleep(0.02)
        # the replacement turning healthy (a heartbeat) wakes it again: node-0 drains
        await asyncio.to_thread(world.agents_report)
        while world.placed_on() != ["node-1", "node-1"]:
            assert time.monotonic() - started < PROMPTLY, world.placed_on()
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        world.ctx.bus.notify("rollout")
        await asyncio.wait_for(loop, 10)


def test_a_node_without_heartbeats_is_marked_down_and_its_instances_replaced(
    world: World,
) -> None:
    deploy(world, {"web": 2})
    [lost] = [i for i in world.instances() if i.node_id == world.node_ids["node-0"]]
    assert address(world, lost) in world.upstreams()
    assert len(world.upstreams()) == 2

    world.silent = {world.node_ids["node-0"]}  # its agent stops answering
    down_after = world.ctx.settings.node_down_after_seconds
    world.clock.advance(down_after - 1)
    world.agents_report()
    assert nodes.mark_down_stale(world.ctx) == []  # not yet
    world.clock.advance(2)
    world.agents_report()
    assert nodes.mark_down_stale(world.ctx) == [world.node_ids["node-0"]]
    assert nodes.get(world.ctx, world.who, "node-0").status == "down"

    # at once, before any rollout pass: the edge no longer routes to it
    assert address(world, lost) not in world.upstreams()
    assert len(world.upstreams()) == 1
    with world.ctx.db.session() as s:
        assert repo.require(s, Instance, "instance", id=lost.id).healthy is False

    # the rollout replaces it on the node that answers
    for _ in range(3):
        world.step()
    assert world.placed_on() == ["node-1", "node-1"]
    assert len(world.upstreams()) == 2
    assert all(a.startswith("10.0.0.2:") for a in world.upstreams())
    with world.ctx.db.session() as s:
        assert repo.require(s, Instance, "instance", id=lost.id).desired_state == "stopped"


def test_a_deploy_does_not_count_a_down_nodes_instances_as_serving(world: World) -> None:
    deploy(world, {"web": 2})
    world.healthy_releases = {1, 2}
    _, second = world.release()
    world.silent = {world.node_ids["node-0"]}
    world.clock.advance(world.ctx.settings.node_down_after_seconds + 1)
    world.agents_report()
    assert nodes.mark_down_stale(world.ctx) == [world.node_ids["node-0"]]
    for _ in range(10):
        world.step()
        # never more serving than there are: the down node's instance is not counted
        assert len(world.serving()) <= 2
    assert world.deployment(second).status == "succeeded"
    assert world.serving() == [2, 2]
    assert world.placed_on() == ["node-1", "node-1"]


def test_an_unplaceable_formation_is_recorded_once_and_keeps_serving(world: World) -> None:
    deploy(world, {"web": {"count": 8, "size": "xlarge"}})  # 4 per node: the cluster is full
    nodes.drain(world.ctx, world.who, "node-0")
    for _ in range(10):
        world.step()
    # nowhere to go: the drained node's instances keep serving
    assert len(world.serving()) == 8
    [problem] = world.events("formation.unplaceable")
    assert "cannot place 4 instances of app web process web" in problem
    assert "largest free slot left is 0 cores and 8 GiB" in problem
    assert apps.get(world.ctx, world.who, "web").formation_error == problem

    nodes.uncordon(world.ctx, world.who, "node-0")
    for _ in range(3):
        world.step()
    assert world.events("formation.placed") == ["The formation is placed"]
    assert len(world.events("formation.unplaceable")) == 1
    assert apps.get(world.ctx, world.who, "web").formation_error is None


@contextmanager
def placements_planned(ctx: Context) -> Iterator[list[str]]:
    """The placement plans made meanwhile, seen in the statements sent to the database:
    each takes the node lock and sums every node's instances per replica group."""
    planned: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "GROUP BY instances.node_id, CASE" in statement:
            planned.append(statement)

    event.listen(ctx.db.engine, "before_cursor_execute", seen)
    try:
        yield planned
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", seen)


def test_an_unplaceable_formation_is_planned_again_only_once_something_changed(
    world: World,
) -> None:
    deploy(world, {"web": {"count": 8, "size": "xlarge"}})  # 4 per node: the cluster is full
    nodes.drain(world.ctx, world.who, "node-0")
    world.step()
    problem = apps.get(world.ctx, world.who, "web").formation_error
    assert problem is not None and "cannot place 4 instances" in problem
    with placements_planned(world.ctx) as planned:
        for _ in range(10):
            world.step(0.5)  # heartbeats and passes; nothing placement reads changes
    assert planned == []  # the node rows were not locked for a plan known to fail
    assert apps.get(world.ctx, world.who, "web").formation_error == problem
    assert len(world.serving()) == 8

    with placements_planned(world.ctx) as planned:
        world.step(RETRY_UNCHANGED_SECONDS)  # tried again all the same, once in a while
        world.step(0.5)
    assert len(planned) == 1

    with placements_planned(world.ctx) as planned:
        node = nodes.register(
            world.ctx, nodes.create_join_token(world.ctx, "more"), "node-2",
            NodeCapacity(cpu_millis=8000, memory_bytes=16 * GIB), ["process"], {}, "test",
            "10.0.0.3",
        ).node
        world.node_ids["node-2"] = node.id
        world.step(0.5)  # room elsewhere: the drained node's instances move there
    assert len(planned) == 1
    assert apps.get(world.ctx, world.who, "web").formation_error is None
    assert world.events("formation.placed") == ["The formation is placed"]
    assert world.placed_on().count("node-2") == 4
