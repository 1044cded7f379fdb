"""The bus wakes waiters: in-process, and across replicas through a real NATS server."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from shellwego.bus import Bus, MemoryBus, wait_until
from support.nats import nats_buses
from support.waiting import POLL, PROMPTLY


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
    one, two = await nats_buses(2)
    try:
        topic = f"node:{os.getpid()}"
        waiter = asyncio.create_task(two.wait(topic, PROMPTLY))
        await asyncio.sleep(0.1)
        threading.Thread(target=one.notify, args=(topic,)).start()
        assert await waiter is True  # woken: a wait that times out answers False
        other = asyncio.create_task(two.wait("unrelated-topic", 0.3))
        one.notify(topic)
        assert await other is False
    finally:
        await one.close()
        await two.close()


async def _started(kind: str) -> tuple[Bus, Bus]:
    """A bus that waits and one that notifies: the same one in memory, two NATS replicas."""
    if kind == "memory":
        bus = MemoryBus()
        await bus.start()
        return bus, bus
    one, two = await nats_buses(2)
    return one, two


@pytest.mark.parametrize("kind", ["memory", "nats"])
async def test_a_change_notified_between_the_read_and_the_wait_is_not_lost(kind: str) -> None:
    waiting, notifying = await _started(kind)
    topic = f"node:race-{os.getpid()}-{kind}"
    index = 1
    reads = 0

    async def changed() -> bool:
        # the state is read, then (before the caller waits) another thread commits a
        # change and notifies: exactly the window a read-then-subscribe query loses
        nonlocal index, reads
        reads += 1
        seen = index
        if reads == 1:
            done = threading.Event()

            def commit() -> None:
                nonlocal index
                index = 2
                notifying.notify(topic)
                done.set()

            threading.Thread(target=commit).start()
            await asyncio.to_thread(done.wait)
            if kind == "nats":
                await asyncio.sleep(0.2)  # the message reaches the waiting replica now
        return seen > 1

    try:
        # it re-reads on its own only after POLL seconds: true within PROMPTLY is a wake-up
        assert await wait_until(waiting, topic, changed, timeout=PROMPTLY, recheck=POLL) is True
        assert reads == 2
    finally:
        await waiting.close()
        await notifying.close()


async def test_a_subscription_keeps_a_notification_until_its_next_wait() -> None:
    bus = MemoryBus()
    await bus.start()
    with bus.subscribe("logs:a") as sub:
        threading.Thread(target=bus.notify, args=("logs:a",)).start()
        await asyncio.sleep(0.05)
        assert await sub.wait(0.01) is True  # notified before the wait began
        assert await sub.wait(0.05) is False  # and consumed by it
        bus.notify("logs:b")
        assert await sub.wait(0.05) is False
    bus.notify("logs:a")  # closed: nothing is kept any more
    with bus.subscribe("logs:a") as again:
        assert await again.wait(0.05) is False
    await bus.close()
