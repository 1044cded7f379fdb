"""The bus wakes waiters: in-process, and across replicas through a real NATS server."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from shellwego.bus import MemoryBus, NatsBus

NATS_URL = os.environ.get("SHELLWEGO_TEST_NATS_URL", "nats://127.0.0.1:4222")


async def test_memory_bus_wakes_a_waiter_notified_from_another_thread() -> None:
    bus = MemoryBus()
    await bus.start()
    waiter = asyncio.create_task(bus.wait("node:1", 5.0))
    await asyncio.sleep(0.05)
    threading.Thread(target=bus.notify, args=("node:1",)).start()
    assert await asyncio.wait_for(waiter, 2.0) is True
    assert await bus.wait("node:1", 0.05) is False  # nothing pending: times out
    await bus.close()


async def test_memory_bus_topics_are_independent() -> None:
    bus = MemoryBus()
    await bus.start()
    waiter = asyncio.create_task(bus.wait("a", 0.3))
    await asyncio.sleep(0.05)
    bus.notify("b")
    assert await waiter is False
    await bus.close()


async def test_nats_bus_wakes_a_waiter_on_another_replica() -> None:
    one, two = NatsBus(NATS_URL), NatsBus(NATS_URL)
    try:
        await one.start()
        await two.start()
    except Exception as exc:  # a missing NATS server fails the run: CI starts one
        pytest.fail(f"NATS is required for this test and is not reachable at {NATS_URL}: {exc}")
    try:
        topic = f"node:{os.getpid()}"
        waiter = asyncio.create_task(two.wait(topic, 5.0))
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        threading.Thread(target=one.notify, args=(topic,)).start()
        assert await asyncio.wait_for(waiter, 3.0) is True
        assert loop.time() - started < 1.0
        other = asyncio.create_task(two.wait("unrelated-topic", 0.3))
        one.notify(topic)
        assert await other is False
    finally:
        await one.close()
        await two.close()
