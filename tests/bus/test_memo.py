"""A read shared by every reader, read again once per notification of its topic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shellwego.bus import MemoryBus
from shellwego.bus.memo import TopicMemo


class Source:
    """A value that changes when told to; each read can be held until released."""

    def __init__(self, bus: MemoryBus) -> None:
        self.bus = bus
        self.value = 0
        self.release = asyncio.Event()
        self.release.set()
        self.during_read: list[int] = []  # values to switch to (and notify) while reading
        self.reading = asyncio.Event()  # set once a read has seen the value

    async def read(self) -> int:
        seen = self.value
        self.reading.set()
        if self.during_read:
            self.value = self.during_read.pop(0)
            self.bus.notify("t")
        await self.release.wait()
        return seen


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    started = MemoryBus()
    await started.start()
    yield started
    await started.close()


async def test_readers_share_one_read_until_the_topic_is_notified(bus: MemoryBus) -> None:
    source = Source(bus)
    memo = TopicMemo(bus, "t", source.read)
    source.release.clear()
    readers = [asyncio.create_task(memo.get()) for _ in range(10)]
    await asyncio.sleep(0)
    source.release.set()
    assert {r.value for r in await asyncio.gather(*readers)} == {0}
    assert memo.reads == 1
    assert (await memo.get()).value == 0 and memo.reads == 1  # nothing changed: no read

    source.value = 1
    bus.notify("t")
    readings = await asyncio.gather(*(memo.get() for _ in range(10)))
    assert {r.value for r in readings} == {1}
    assert memo.reads == 2


async def test_a_change_notified_during_a_read_makes_the_next_reader_read_again(
    bus: MemoryBus,
) -> None:
    source = Source(bus)
    source.during_read = [1]
    memo = TopicMemo(bus, "t", source.read)
    assert (await memo.get()).value == 0  # read before the change
    assert (await memo.get()).value == 1  # the change seen, not the stale reading
    assert memo.reads == 2


async def test_after_and_max_age_ask_for_a_read_begun_later(bus: MemoryBus) -> None:
    source = Source(bus)
    memo = TopicMemo(bus, "t", source.read)
    first = await memo.get()
    mark = memo.mark()
    source.value = 2  # changed without a notification (a lost one)
    assert (await memo.get()).value == 0
    later = await memo.get(after=mark)
    assert later.value == 2 and later.stamp.seq > first.stamp.seq
    assert (await memo.get(max_age=3600)).stamp.seq == later.stamp.seq
    await asyncio.sleep(0.01)
    assert (await memo.get(max_age=0)).stamp.seq > later.stamp.seq


async def test_a_reader_joins_a_running_read_only_if_it_began_after_what_it_asks(
    bus: MemoryBus,
) -> None:
    source = Source(bus)
    memo = TopicMemo(bus, "t", source.read)
    source.release.clear()
    early = asyncio.create_task(memo.get())
    await source.reading.wait()  # the read has begun, and holds
    source.value = 3
    bus.notify("t")
    late = asyncio.create_task(memo.get())
    await asyncio.sleep(0)
    source.release.set()
    assert (await early).value == 0
    assert (await late).value == 3  # one read after the running one, not joined to it
    assert memo.reads == 2
