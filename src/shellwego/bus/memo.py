"""One read shared by every reader in the process, read again once per notification.

A :class:`TopicMemo` holds the latest result of an expensive read (the route table, say)
and the subscription that tells it when that result went stale: every notification of its
topic marks the reads begun before it as stale. Any number of readers then share one read
per change instead of each running their own, and only one read runs at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .base import Bus, Subscription

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Stamp:
    """When a read began: ``seq`` counts reads in the order they began, ``epoch`` the
    notifications seen before it, ``started`` is the event loop's clock."""

    seq: int
    started: float
    epoch: int


@dataclass(frozen=True, slots=True)
class Reading(Generic[T]):
    value: T
    stamp: Stamp


class TopicMemo(Generic[T]):
    """The latest ``read()``, kept until ``topic`` is notified (call from the event loop)."""

    def __init__(self, bus: Bus, topic: str, read: Callable[[], Awaitable[T]]) -> None:
        self._bus = bus
        self._topic = topic
        self._read = read
        self._subscription: Subscription | None = None
        self._epoch = 0
        self._begun = 0
        self._latest: Reading[T] | None = None
        self._running: tuple[Stamp, asyncio.Future[Reading[T]]] | None = None

    @property
    def reads(self) -> int:
        """How many reads have begun."""
        return self._begun

    def mark(self) -> int:
        """A point in time for :meth:`get`'s ``after``: reads begun so far are before it."""
        return self._begun

    async def get(self, *, after: int | None = None, max_age: float | None = None) -> Reading[T]:
        """A read begun after every notification seen so far, and after ``mark()`` returned
        ``after``, and at most ``max_age`` seconds ago: the latest one when it qualifies,
        the one running when it does, else a new one (after the running one ends)."""
        loop = asyncio.get_running_loop()
        if self._subscription is None:
            # subscribed before the first read: a change committed during it is seen
            self._subscription = self._bus.subscribe(self._topic)

        def fits(stamp: Stamp) -> bool:
            return (
                stamp.epoch >= self._epoch
                and (after is None or stamp.seq > after)
                and (max_age is None or loop.time() - stamp.started <= max_age)
            )

        if self._running is not None and self._running[1].get_loop() is not loop:
            self._running = None  # begun on an event loop that is gone
        while True:
            if self._subscription.take():
                self._epoch += 1
            if self._latest is not None and fits(self._latest.stamp):
                return self._latest
            if self._running is not None:
                began, future = self._running
                if fits(began):
                    return await asyncio.shield(future)
                with contextlib.suppress(Exception):
                    await asyncio.shield(future)
                continue
            return await asyncio.shield(self._begin(loop))

    def _begin(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Reading[T]]:
        self._begun += 1
        began = Stamp(seq=self._begun, started=loop.time(), epoch=self._epoch)
        task = loop.create_task(self._complete(began))
        self._running = (began, task)
        return task

    async def _complete(self, began: Stamp) -> Reading[T]:
        try:
            value = await self._read()
        finally:
            if self._running is not None and self._running[0] is began:
                self._running = None
        reading = Reading(value=value, stamp=began)
        if self._latest is None or self._latest.stamp.seq < began.seq:
            self._latest = reading
        return reading

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
