"""Health checks against real sockets: http (< 500), tcp accept, process running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shellwego.agent.health import HealthMonitor, Target
from shellwego.agent.reconcile import HealthCheck
from shellwego.runtime.driver import InstanceSpec
from shellwego.runtime.fake import FakeDriver
from support.net import free_port
from support.waiting import POLL, PROMPTLY


async def http_server(port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        path = request.split()[1].decode()
        code = {"/broken": "500 Internal Server Error", "/missing": "404 Not Found"}.get(
            path, "200 OK"
        )
        writer.write(f"HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def running(driver: FakeDriver, iid: str, port: int) -> None:
    spec = InstanceSpec(
        instance_id=iid,
        app_id="A",
        app_name="blog",
        process_type="web",
        release_id="R",
        command="serve",
        app_dir=Path("/nonexistent"),
        env={},
        port=port,
    )
    await driver.prepare(spec)
    await driver.start(spec)


async def until(predicate: object, timeout: float = PROMPTLY) -> None:
    """Until ``predicate()``; ``timeout`` only bounds a failure."""
    end = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def monitor() -> AsyncIterator[tuple[HealthMonitor, FakeDriver, list[int]]]:
    driver = FakeDriver()
    changes: list[int] = []
    mon = HealthMonitor(driver, lambda: changes.append(1), fast=0.1, slow=0.2)
    yield mon, driver, changes
    await mon.close()


async def test_probe_kinds(monitor: tuple[HealthMonitor, FakeDriver, list[int]]) -> None:
    mon, driver, _ = monitor
    port = free_port()
    await running(driver, "i", port)

    def target(kind: str, path: str = "/") -> Target:
        return Target("i", port, HealthCheck(type=kind, path=path))  # type: ignore[arg-type]

    assert await mon.check(target("process"))
    assert not await mon.check(target("tcp"))
    assert not await mon.check(target("http"))
    server = await http_server(port)
    try:
        assert await mon.check(target("tcp"))
        assert await mon.check(target("http"))
        assert await mon.check(target("http", "/missing"))  # any status < 500
        assert not await mon.check(target("http", "/broken"))
        await driver.stop("i")
        assert not await mon.check(target("http"))  # the runtime says it is not running
        assert not await mon.check(target("process"))
    finally:
        server.close()
        await server.wait_closed()


async def test_new_instance_turns_healthy_soon_after_listening_and_back(
    monitor: tuple[HealthMonitor, FakeDriver, list[int]],
) -> None:
    mon, driver, changes = monitor
    port = free_port()
    await running(driver, "i", port)
    mon.sync({"i": Target("i", port, HealthCheck(type="http", path="/"))})
    await asyncio.sleep(0.3)
    assert not mon.healthy("i")
    assert changes == []  # unhealthy from the start is no change
    server = await http_server(port)
    try:
        await until(lambda: mon.healthy("i"))
        assert changes == [1]
    finally:
        server.close()
        await server.wait_closed()
    await until(lambda: not mon.healthy("i"))
    assert changes == [1, 1]
    mon.sync({})
    assert not mon.healthy("i")


async def test_an_unhealthy_instance_is_probed_at_the_fast_interval() -> None:
    """Healthy instances are probed only every ``slow`` seconds (POLL here): an instance
    that turns healthy within PROMPTLY of listening was probed at the fast interval."""
    driver = FakeDriver()
    changes: list[int] = []
    mon = HealthMonitor(driver, lambda: changes.append(1), fast=0.1, slow=POLL)
    port = free_port()
    await running(driver, "i", port)
    mon.sync({"i": Target("i", port, HealthCheck(type="http", path="/"))})
    await asyncio.sleep(0.3)  # probed a few times: nothing listens yet
    server = await http_server(port)
    try:
        await until(lambda: mon.healthy("i"), timeout=PROMPTLY)
        assert changes == [1]
    finally:
        server.close()
        await server.wait_closed()
        await mon.close()
