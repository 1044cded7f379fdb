"""Several control-plane replicas: the client moves to the next one when a request fails,
a blocking query on a dead replica gives up, the agent keeps its node alive through
another replica, and an agent cut off from the control plane stops, once it is back,
what the control plane stopped meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from shellwego.agent.client import ControlPlaneClient
from shellwego.agent.daemon import Agent
from shellwego.errors import ConfigError, Unavailable
from shellwego.models import Instance, Node, NodeStatus
from shellwego.replicas import Replicas, parse_urls
from shellwego.runtime.fake import FakeDriver
from shellwego.services import agents, nodes, placement
from shellwego.store import repository as repo
from support.cutproxy import api_replica, proxy_to

from .conftest import Plane, wait_for
from .test_agent_integration import (  # noqa: F401
    Running,
    agent_settings,
    deploy,
    running,
    stop_instance,
)
from .test_client import BEAT, CAPACITY

# ---- URL lists and rotation ----------------------------------------------------------------



def test_server_urls_are_parsed_from_one_or_several() -> None:
    assert parse_urls("http://a:8000/") == ("http://a:8000",)
    assert parse_urls(" http://a:8000, https://b/ ,,http://a:8000") == (
        "http://a:8000",
        "https://b",
    )
    assert parse_urls(["http://a", "http://b,http://c"]) == ("http://a", "http://b", "http://c")
    for bad in ("", " , ", "a:8000", "ftp://a", "http://"):
        with pytest.raises(ConfigError):
            parse_urls(bad)


async def test_a_failure_moves_to_the_next_replica_once() -> None:
    replicas = Replicas("http://a,http://b,http://c")
    assert replicas.current == "http://a"
    waiting = asyncio.create_task(replicas.moved_from("http://a"))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert replicas.failed("http://a", "refused")
    assert replicas.current == "http://b"
    await asyncio.wait_for(waiting, 1)
    # a second request that failed on the replica already left moves nothing
    assert not replicas.failed("http://a", "refused")
    assert replicas.current == "http://b"
    assert replicas.failed("http://b")
    assert replicas.failed("http://c")
    assert replicas.current == "http://a"  # round and round while all are down
    assert replicas.switches == 3
    replicas.answered("http://a")  # back: a later failure there is reported again
    await asyncio.wait_for(replicas.moved_from("http://c"), 1)  # not in use: at once

    single = Replicas("http://only")
    assert not single.failed("http://only")
    assert single.current == "http://only"


# ---- real replicas -------------------------------------------------------------------------


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def register(client: ControlPlaneClient, plane: Plane, hostname: str = "node-f") -> None:
    reg = await client.register(
        plane.join_token,
        hostname=hostname,
        capacity=CAPACITY,
        runtimes=["process"],
        labels={},
        agent_version="test",
        address="127.0.0.1",
    )
    client.node_token = reg.node_token


async def test_the_client_moves_past_a_replica_that_refuses(plane: Plane) -> None:
    client = ControlPlaneClient(f"{dead_url()},{plane.url}")
    try:
        with pytest.raises(Unavailable):
            await register(client, plane)
        assert client.server_url == plane.url
        await register(client, plane)  # the caller's retry reaches the next replica
        answer = await client.heartbeat(BEAT)
        assert answer.node_status == "ready"
        assert client.replicas.switches == 1
    finally:
        await client.aclose()


async def test_a_blocking_query_on_a_hung_replica_gives_up_when_a_request_fails_there(
    plane: Plane,
) -> None:
    async with proxy_to(plane.url) as first, api_replica(plane.ctx) as second:
        client = ControlPlaneClient([first.url, second], timeout=2)
        try:
            await register(client, plane)
            index = (await client.assignments(0, wait=0)).index
            waiting = asyncio.create_task(client.assignments(index, wait=60))
            await asyncio.sleep(0.2)
            first.set("hang")  # its host vanished: nothing answers, nothing closes
            with pytest.raises(Unavailable):
                await client.heartbeat(BEAT)  # times out
            assert client.server_url == second
            # the blocking query does not wait out its 60 s on the dead replica
            with pytest.raises(Unavailable, match="failed; now using"):
                await asyncio.wait_for(waiting, 10)
            assert (await client.assignments(index, wait=0)).index == index
            await client.heartbeat(BEAT)
        finally:
            await client.aclose()


def node_row(plane: Plane, node_id: str) -> Node:
    with plane.ctx.db.session() as s:
        return repo.require(s, Node, "node", id=node_id)


async def test_the_agent_keeps_its_node_alive_through_another_replica(
    plane: Plane,
    running: Running,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with proxy_to(plane.url) as first, api_replica(plane.ctx) as second:
        settings = dataclasses.replace(
            agent_settings(plane, tmp_path / "agent", plane.join_token),
            server_url=f"{first.url},{second}",
        )
        driver = FakeDriver()
        agent = Agent(settings, driver, client=ControlPlaneClient(settings.server_url, timeout=2))
        running.start(agent)
        await wait_for(lambda: agent.heartbeats >= 1 and agent.desired is not None)
        assert agent.client.server_url == first.url
        digest = plane.artifacts.add({"Procfile": b"worker: python worker.py\n"})
        ids = await asyncio.to_thread(deploy, plane, digest, 2)
        await wait_for(lambda: driver.running_ids() == set(ids), timeout=10)

        first.set("hang")
        await wait_for(lambda: agent.client.server_url == second, timeout=10)
        beats = agent.heartbeats
        await wait_for(lambda: agent.heartbeats >= beats + 3, timeout=10)
        node = await asyncio.to_thread(node_row, plane, agent.node_id or "")
        assert node.status == NodeStatus.READY
        assert driver.running_ids() == set(ids)  # nothing restarted or stopped meanwhile
        # assignments come through the other replica: a stop reaches the agent
        await asyncio.to_thread(stop_instance, plane, ids[0])
        await wait_for(lambda: driver.running_ids() == {ids[1]}, timeout=10)


def declare_down_and_stop_its_instances(plane: Plane, node_id: str) -> list[str]:
    """What the control plane does to a node whose heartbeats stopped: liveness marks it
    down, the rollout stops its instances (and places replacements elsewhere)."""
    ctx = plane.ctx
    with ctx.db.session() as s:
        row = repo.require(s, Node, "node", id=node_id)
        row.last_heartbeat_at = ctx.clock.now() - timedelta(hours=1)
    assert nodes.mark_down_stale(ctx) == [node_id]
    with ctx.db.session() as s:
        lost = repo.find_all(s, Instance, node_id=node_id, desired_state="running")
        placement.stop(ctx, s, lost)
        return [i.id for i in lost]


async def test_an_agent_back_from_a_cut_stops_what_the_control_plane_stopped_meanwhile(
    plane: Plane,
    running: Running,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with proxy_to(plane.url) as link:
        settings = dataclasses.replace(
            agent_settings(plane, tmp_path / "agent", plane.join_token), server_url=link.url
        )
        driver = FakeDriver()
        agent = Agent(settings, driver, client=ControlPlaneClient(link.url, timeout=2))
        running.start(agent)
        await wait_for(lambda: agent.heartbeats >= 1 and agent.desired is not None)
        digest = plane.artifacts.add({"Procfile": b"worker: python worker.py\n"})
        ids = await asyncio.to_thread(deploy, plane, digest, 2)
        await wait_for(lambda: driver.running_ids() == set(ids), timeout=10)
        node_id = agent.node_id or ""

        link.set("refuse")  # the only replica it knows is gone
        await asyncio.sleep(0.5)  # an answer already on its way when the link went is read
        beats = agent.heartbeats
        stopped = await asyncio.to_thread(declare_down_and_stop_its_instances, plane, node_id)
        assert sorted(stopped) == sorted(ids)
        index = await asyncio.to_thread(agents.current_index, plane.ctx, node_id)
        await asyncio.sleep(1.0)  # failed heartbeats, watches and resyncs
        assert agent.heartbeats == beats
        assert driver.running_ids() == set(ids)  # cut off: its instances keep serving

        driver.actions.clear()
        link.set("pass")  # back: the assignments it fetches are authoritative
        await wait_for(lambda: driver.running_ids() == set(), timeout=10)
        assert sorted(driver.actions) == sorted(
            [("stop", i) for i in ids] + [("remove", i) for i in ids]
        )
        assert agent.desired == []
        await wait_for(
            lambda: asyncio.to_thread(lambda: node_row(plane, node_id).status == NodeStatus.READY),
            timeout=5,
        )

        # the control plane sees them gone: their ports are free again
        def gone() -> bool:
            with plane.ctx.db.session() as s:
                return all(
                    repo.require(s, Instance, "instance", id=i).state == "removed" for i in ids
                )

        await wait_for(lambda: asyncio.to_thread(gone), timeout=5)
        assert await asyncio.to_thread(agents.current_index, plane.ctx, node_id) >= index


@pytest.mark.parametrize("command", ["agent", "edge"])
def test_malformed_server_urls_are_a_usage_error(command: str, tmp_path: Path) -> None:
    shellwego = str(Path(sys.executable).parent / "shellwego")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    for argv, extra in (
        (["--server", "http://a:8400,ftp://b"], {}),
        ([], {"SHELLWEGO_SERVER_URLS": " , "}),
    ):
        done = subprocess.run(
            [shellwego, command, *argv],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
