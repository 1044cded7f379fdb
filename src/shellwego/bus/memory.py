"""In-process bus for the all-in-one: asyncio events per topic."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict


class MemoryBus:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._lock = threading.Lock()
        self.closed = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.closed = False

    async def close(self) -> None:
        """Wake every waiter; later waits return at once (the process is shutting down)."""
        self.closed = True
        self._wake_all()

    def _wake(self, topic: str) -> None:
        with self._lock:
            waiters = self._waiters.pop(topic, set())
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for topic in list(self._waiters):
            self._wake(topic)

    def notify(self, topic: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake(topic)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake, topic)

    async def wait(self, topic: str, timeout: float) -> bool:
        if self.closed:
            await asyncio.sleep(0)
            return False
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters[topic].add(future)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiters = self._waiters.get(topic)
                if waiters is not None:
                    waiters.discard(future)
                    if not waiters:
                        self._waiters.pop(topic, None)
