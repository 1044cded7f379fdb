"""The agent against a real control plane (API + database), with the fake runtime."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shellwego.agent import identity as identities
from shellwego.agent.client import ControlPlaneClient
from shellwego.agent.daemon import Agent, run_until_stopped
from shellwego.agent.reconcile import Executor
from shellwego.agent.settings import AgentSettings
from shellwego.errors import Unauthenticated
from shellwego.models import AppCreate, Instance, LogLine, Node, Resources, Role
from shellwego.models.agentprotocol import Heartbeat, HeartbeatAnswer
from shellwego.runtime.driver import InstanceState
from shellwego.runtime.drivers import DriverSet
from shellwego.runtime.fake import FakeDriver
from shellwego.services import apps, placement
from shellwego.services.context import Principal
from shellwego.store import repository as repo
from support.releases import slug_release

from .conftest import Plane, wait_for
from .helpers import assignment

GIB = 1024**3


def agent_settings(plane: Plane, state_dir: Path, join: str | None) -> AgentSettings:
    return AgentSettings(
        server_url=plane.url,
        join_token=join,
        state_dir=state_dir,
        hostname="node-a",
        labels={"zone": "a"},
        heartbeat_interval=0.3,
        capacity_cpu_millis=4000,
        capacity_memory_bytes=8 * GIB,
    )


class Running:
    """Agents started by a test, stopped at its end (their instances keep running)."""

    def __init__(self) -> None:
        self.tasks: list[tuple[Agent, asyncio.Task[None]]] = []

    def start(self, agent: Agent) -> asyncio.Task[None]:
        task = asyncio.create_task(agent.run())
        self.tasks.append((agent, task))
        return task

    async def stop(self, agent: Agent) -> None:
        await asyncio.wait_for(agent.stop(), 10)
        for a, task in self.tasks:
            if a is agent:
                await asyncio.wait_for(task, 10)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    r = Running()
    yield r
    for agent, task in r.tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(agent.stop(), 10)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 10)


def node_rows(plane: Plane) -> list[Node]:
    with plane.ctx.db.session() as s:
        return repo.find_all(s, Node)


async def list_nodes(plane: Plane) -> list[dict[str, object]]:
    async with httpx.AsyncClient(base_url=plane.url) as http:
        r = await http.get("/v1/nodes", headers={"Authorization": f"Bearer {plane.operator_token}"})
        assert r.status_code == 200, r.text
        items: list[dict[str, object]] = r.json()["items"]
        return items


async def test_join_heartbeat_and_restart_as_the_same_node(
    plane: Plane, running: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state = tmp_path / "agent"
    driver = FakeDriver()
    first = Agent(agent_settings(plane, state, plane.join_token), driver)
    running.start(first)
    await wait_for(lambda: first.heartbeats >= 1)
    listed = await list_nodes(plane)
    assert [n["hostname"] for n in listed] == ["node-a"]
    node = listed[0]
    assert node["id"] == first.node_id
    assert node["status"] == "ready"
    assert node["capacity"] == {"cpu_millis": 4000, "memory_bytes": 8 * GIB}
    assert node["labels"] == {"zone": "a"}

    saved = json.loads((state / "node.json").read_text())
    assert saved["node_id"] == first.node_id
    assert (state / "node.json").stat().st_mode & 0o777 == 0o600

    # heartbeats keep moving last_heartbeat_at
    before = (await asyncio.to_thread(node_rows, plane))[0].last_heartbeat_at
    await wait_for(
        lambda: asyncio.to_thread(lambda: node_rows(plane)[0].last_heartbeat_at != before),
        timeout=5,
    )

    await running.stop(first)
    # restarted without any join token: it can only be the saved node
    second = Agent(agent_settings(plane, state, None), driver)
    running.start(second)
    await wait_for(lambda: second.heartbeats >= 1)
    assert second.node_id == first.node_id
    assert [n["id"] for n in await list_nodes(plane)] == [first.node_id]

    # secrets never reach the log
    text = caplog.text
    assert plane.join_token not in text
    assert saved["node_token"] not in text


class RecordingClient(ControlPlaneClient):
    """The real client, keeping the heartbeat bodies it sent (as they went on the wire)."""

    def __init__(self, server_url: str) -> None:
        super().__init__(server_url)
        self.sent: list[dict[str, Any]] = []

    async def heartbeat(self, body: Heartbeat) -> HeartbeatAnswer:
        self.sent.append(body.model_dump(mode="json", exclude_none=True))
        return await super().heartbeat(body)


async def test_machine_facts_go_out_on_the_first_heartbeat_after_a_start_only(
    plane: Plane, running: Running, tmp_path: Path
) -> None:
    state = tmp_path / "agent"
    client = RecordingClient(plane.url)
    agent = Agent(agent_settings(plane, state, plane.join_token), FakeDriver(), client=client)
    running.start(agent)
    await wait_for(lambda: agent.heartbeats >= 3)
    first, *later = client.sent
    assert first["kernel_version"] == os.uname().release
    assert "cpu_features" in first["capabilities"]
    # the runtimes it runs (the fake driver stands in for the process runtime), and why
    # not the others
    assert first["runtimes"] == ["process"]
    assert set(first["runtime_reasons"]) == {"oci", "microvm"}
    assert later and all(not {"kernel_version", "capabilities", "runtimes"} & set(b) for b in later)
    [node] = await list_nodes(plane)  # later heartbeats kept what the first one said
    assert node["kernel_version"] == os.uname().release
    assert node["capabilities"] == first["capabilities"]

    await running.stop(agent)
    restarted = RecordingClient(plane.url)
    again = Agent(agent_settings(plane, state, None), FakeDriver(), client=restarted)
    running.start(again)
    await wait_for(lambda: again.heartbeats >= 2)
    assert ["kernel_version" in b for b in restarted.sent[:2]] == [True, False]


async def test_revoked_node_token_stops_the_agent_with_a_clear_error(
    plane: Plane, running: Running, tmp_path: Path
) -> None:
    state = tmp_path / "agent"
    agent = Agent(agent_settings(plane, state, plane.join_token), FakeDriver())
    task = running.start(agent)
    await wait_for(lambda: agent.heartbeats >= 1)

    def revoke() -> None:
        with plane.ctx.db.session() as s:
            node = repo.require(s, Node, "node", id=agent.node_id)
            node.token_hash = "0" * 64

    await asyncio.to_thread(revoke)
    with pytest.raises(Unauthenticated) as err:
        await asyncio.wait_for(task, 10)
    assert "node.json" in err.value.detail
    assert "join token" in err.value.detail
    # it did not quietly register a second node
    assert len(await asyncio.to_thread(node_rows, plane)) == 1


def who(plane: Plane) -> Principal:
    return Principal(
        user_id=plane.user_id,
        organization_id=plane.organization_id,
        role=Role.OWNER,
        token_id=None,
        is_operator=True,
    )


def deploy(plane: Plane, digest: str, count: int) -> list[str]:
    """An app with a release of ``digest`` and ``count`` worker instances placed."""
    ctx = plane.ctx
    app = apps.create(ctx, who(plane), AppCreate(name="blog"))
    with ctx.db.session() as s:
        app = repo.require(s, type(app), "app", id=app.id)
        release = slug_release(
            ctx,
            s,
            who(plane),
            app,
            {"web": "python app.py", "worker": "python worker.py"},
            digest=digest,
            slug_env={"PYTHONUNBUFFERED": "1", "SLUG_SECRET": "s3cr3t-slug-value"},
        )
        placed = placement.place(
            ctx, s, app, release, "worker", count, Resources(), deployment_id=None
        )
        return [i.id for i in placed]


def stop_instance(plane: Plane, instance_id: str) -> None:
    with plane.ctx.db.session() as s:
        inst = repo.require(s, Instance, "instance", id=instance_id)
        placement.stop(plane.ctx, s, [inst])


def instance_rows(plane: Plane) -> dict[str, Instance]:
    with plane.ctx.db.session() as s:
        return {i.id: i for i in repo.find_all(s, Instance)}


def log_lines(plane: Plane) -> list[str]:
    with plane.ctx.db.session() as s:
        return [ln.line for ln in repo.find_all(s, LogLine)]


async def test_assignments_start_and_stop_instances(
    plane: Plane, running: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state = tmp_path / "agent"
    driver = FakeDriver()
    agent = Agent(agent_settings(plane, state, plane.join_token), driver)
    running.start(agent)
    await wait_for(lambda: agent.heartbeats >= 1 and agent.desired is not None)
    assert driver.actions == []

    digest = plane.artifacts.add({"Procfile": b"worker: python worker.py\n", "worker.py": b"1"})
    ids = await asyncio.to_thread(deploy, plane, digest, 2)
    # woken by the change: well within the 30 s the assignments watch and resync wait
    await wait_for(lambda: driver.running_ids() == set(ids), timeout=5)
    assert sorted(driver.actions) == sorted(
        [("prepare", i) for i in ids] + [("start", i) for i in ids]
    )
    spec = driver.spec_of(ids[0])
    uid = spec.uid
    assert uid is not None and uid >= 1000000  # the app's own uid, from the platform's range
    assert spec.app_dir == state / "slugs" / f"{digest}-{uid}"
    assert (spec.app_dir / "worker.py").read_bytes() == b"1"
    assert spec.command == "python worker.py"
    assert spec.env["SHELLWEGO_APP"] == "blog"
    assert spec.env["PYTHONUNBUFFERED"] == "1"

    # observed state and health (process check) reach the control plane
    def reported() -> bool:
        rows = instance_rows(plane)
        return all(rows[i].state == "running" and rows[i].healthy for i in ids)

    await wait_for(lambda: asyncio.to_thread(reported), timeout=5)

    # app output is shipped to the control plane's log store
    driver.emit_log(ids[0], "worker ready")
    await wait_for(lambda: asyncio.to_thread(lambda: "worker ready" in log_lines(plane)))

    # a crash the runtime gave up on is reported and the instance started again
    driver.max_restarts = 0
    driver.crash(ids[1], exit_code=9)
    await wait_for(
        lambda: asyncio.to_thread(lambda: instance_rows(plane)[ids[1]].exit_code == 9), timeout=5
    )
    await wait_for(lambda: ids[1] in driver.running_ids(), timeout=5)
    await wait_for(
        lambda: asyncio.to_thread(lambda: instance_rows(plane)[ids[1]].restarts >= 1), timeout=5
    )

    # removing an assignment stops and removes exactly that instance
    driver.actions.clear()
    await asyncio.to_thread(stop_instance, plane, ids[0])
    await wait_for(lambda: ("remove", ids[0]) in driver.actions, timeout=5)  # woken, no poll
    assert driver.actions == [("stop", ids[0]), ("remove", ids[0])]
    assert driver.running_ids() == {ids[1]}

    # an agent restart re-adopts the running instance and restarts nothing
    await running.stop(agent)
    assert driver.running_ids() == {ids[1]}
    driver.actions.clear()
    again = Agent(agent_settings(plane, state, None), driver)
    running.start(again)
    await wait_for(lambda: again.heartbeats >= 2 and again.desired is not None)
    assert [a.instance_id for a in again.desired or []] == [ids[1]]
    # handed its spec (its environment, kept in memory only) once; restarted: never
    await wait_for(lambda: driver.actions == [("prepare", ids[1])], timeout=5)
    assert (await driver.inspect(ids[1])).state == InstanceState.RUNNING
    # env values never reach the agent's log
    assert "s3cr3t-slug-value" not in caplog.text


async def test_instances_keep_running_while_the_control_plane_is_unreachable(
    tmp_path: Path,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = tmp_path / "agent"
    identities.save(state, identities.Identity("01NODE", "swgn_x", f"http://127.0.0.1:{port}"))
    driver = FakeDriver()

    async def here(digest: str, uid: int | None) -> Path:
        return tmp_path

    # an instance left running by a previous agent
    await Executor(DriverSet({"process": driver}, slugs=here)).apply([assignment("kept")])
    driver.actions.clear()
    settings = AgentSettings(
        server_url=f"http://127.0.0.1:{port}",
        join_token=None,
        state_dir=state,
        hostname="node-a",
        labels={},
        heartbeat_interval=0.1,
        resync_interval=0.2,
        capacity_cpu_millis=1000,
        capacity_memory_bytes=GIB,
    )
    agent = Agent(settings, driver)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_until_stopped(agent, stop.wait()))
    await asyncio.sleep(1.5)  # several failed heartbeats, watches and resyncs
    assert not runner.done()
    assert agent.heartbeats == 0
    assert agent.desired is None
    assert driver.actions == []
    assert driver.running_ids() == {"kept"}
    # stopping the agent leaves the instance running
    stop.set()
    await asyncio.wait_for(runner, 5)
    assert driver.actions == []
    assert driver.running_ids() == {"kept"}
