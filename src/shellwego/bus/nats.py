"""NATS-backed bus: a notification on one replica wakes waiters on every replica."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats

from shellwego.tasks import spawn_background

from .memory import MemoryBus, MemorySubscription

SUBJECT = "shellwego.wake"


class NatsBus:
    def __init__(self, url: str) -> None:
        self.url = url
        self._local = MemoryBus()
        self._nc: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        await self._local.start()
        self._loop = asyncio.get_running_loop()
        self._nc = await nats.connect(self.url, max_reconnect_attempts=-1)

        async def on_message(msg: Any) -> None:
            self._local.notify(msg.data.decode())

        await self._nc.subscribe(SUBJECT, cb=on_message)

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        await self._local.close()

    def notify(self, topic: str) -> None:
        # local waiters are woken through the NATS round trip like remote ones, and
        # directly as well so a slow broker costs nothing on this replica
        self._local.notify(topic)
        loop = self._loop
        if loop is None or self._nc is None or loop.is_closed():
            return
        payload = topic.encode()

        def publish() -> None:
            spawn_background(self._nc.publish(SUBJECT, payload))

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(publish)

    @property
    def closed(self) -> bool:
        return self._local.closed

    def subscribe(self, topic: str) -> MemorySubscription:
        # every message from the broker is a local notification, so a local subscription
        # sees wake-ups from every replica
        return self._local.subscribe(topic)

    async def wait(self, topic: str, timeout: float) -> bool:
        return await self._local.wait(topic, timeout)
