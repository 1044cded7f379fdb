"""Level-triggered reconcile and wake-ups: the periodic full resync restarts what died
behind the agent's back, and NATS wakes the assignments query of another replica."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shellwego.agent.daemon import Agent
from shellwego.models.agentprotocol import SlugArtifact
from shellwego.runtime.driver import InstanceState
from shellwego.runtime.fake import FakeDriver
from shellwego.services import agents
from shellwego.services.context import Context
from support.nats import nats_buses
from support.waiting import POLL, PROMPTLY

from .conftest import Plane, wait_for
from .test_agent_integration import Running, agent_settings, deploy, running  # noqa: F401
from .test_client import registered


async def test_the_periodic_resync_restarts_an_instance_killed_behind_the_agents_back(
    plane: Plane,
    running: Running,  # noqa: F811
    tmp_path: Path,
) -> None:
    driver = FakeDriver(max_restarts=0)  # a crash is final: the driver does not restart it
    settings = dataclasses.replace(
        agent_settings(plane, tmp_path / "agent", plane.join_token), resync_interval=0.4
    )
    # the agent never looks at the driver on its own: only the resync can notice
    agent = Agent(settings, driver, observe_interval=3600)
    running.start(agent)
    await wait_for(lambda: agent.heartbeats >= 1 and agent.desired is not None)
    digest = plane.artifacts.add({"Procfile": b"worker: python worker.py\n"})
    [iid] = await asyncio.to_thread(deploy, plane, digest, 1)
    await wait_for(lambda: driver.running_ids() == {iid}, timeout=5)
    index = await asyncio.to_thread(agents.current_index, plane.ctx, agent.node_id or "")

    driver.actions.clear()
    driver.crash(iid, exit_code=137)  # killed: nobody tells the agent
    assert (await driver.inspect(iid)).state == InstanceState.EXITED
    await wait_for(lambda: driver.running_ids() == {iid}, timeout=3)
    assert driver.actions == [("prepare", iid), ("start", iid)]
    # no new assignment was involved
    assert await asyncio.to_thread(agents.current_index, plane.ctx, agent.node_id or "") == index


@pytest.fixture
async def nats_replicas(ctx: Context) -> AsyncIterator[Context]:
    """The API's context on NATS, and another control-plane replica's (returned)."""
    here, there = await nats_buses(2)
    ctx.bus = here
    try:
        yield dataclasses.replace(ctx, bus=there, route_tables=None, edge_table=None)
    finally:
        await there.close()
        await here.close()


async def test_nats_wakes_the_assignments_query_on_another_replica(
    nats_replicas: Context, plane: Plane
) -> None:
    # the API re-reads on its own only every POLL seconds, and the query waits as long:
    # an answer within PROMPTLY came through NATS
    plane.ctx.settings = dataclasses.replace(plane.ctx.settings, blocking_recheck=POLL)
    client = await registered(plane)
    try:
        first = await client.assignments(0, wait=0)
        waiting = asyncio.create_task(client.assignments(first.index, wait=POLL))
        await asyncio.sleep(0.3)  # the query is parked on the API's replica
        assert not waiting.done()

        other = dataclasses.replace(plane, ctx=nats_replicas)
        digest = plane.artifacts.add({"Procfile": b"worker: python worker.py\n"})
        [iid] = await asyncio.to_thread(deploy, other, digest, 1)  # committed over there
        answer = await asyncio.wait_for(waiting, PROMPTLY)
        assert answer.index > first.index
        assert [i.instance_id for i in answer.instances] == [iid]
        assert answer.instances[0].artifact == SlugArtifact(digest=digest)
    finally:
        await client.aclose()
