"""In-process bus for the all-in-one: subscriptions per topic, woken on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from types import TracebackType


class MemorySubscription:
    """Remembers a notification until the next :meth:`wait` consumes it."""

    def __init__(self, bus: MemoryBus, topic: str) -> None:
        self._bus = bus
        self.topic = topic
        self._notified = False
        self._future: asyncio.Future[None] | None = None

    def fire(self) -> None:
        """Called on the event loop's thread."""
        self._notified = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def wait(self, timeout: float) -> bool:
        if self.take():
            return True
        if self._bus.closed:
            await asyncio.sleep(0)
            return False
        self._future = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._future, timeout)
        except TimeoutError:
            pass
        finally:
            self._future = None
        # a notification that lands as the timeout expires counts: it is never dropped
        return self.take()

    def take(self) -> bool:
        notified, self._notified = self._notified, False
        return notified

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> MemorySubscription:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class MemoryBus:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscriptions: dict[str, set[MemorySubscription]] = defaultdict(set)
        self._lock = threading.Lock()
        self.closed = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.closed = False

    async def close(self) -> None:
        """Wake every waiter; later waits return at once (the process is shutting down)."""
        self.closed = True
        with self._lock:
            topics = list(self._subscriptions)
        for topic in topics:
            self._wake(topic)

    def _wake(self, topic: str) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions.get(topic, ()))
        for subscription in subscriptions:
            subscription.fire()

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

    def subscribe(self, topic: str) -> MemorySubscription:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        subscription = MemorySubscription(self, topic)
        with self._lock:
            self._subscriptions[topic].add(subscription)
        return subscription

    def unsubscribe(self, subscription: MemorySubscription) -> None:
        with self._lock:
            subscriptions = self._subscriptions.get(subscription.topic)
            if subscriptions is not None:
                subscriptions.discard(subscription)
                if not subscriptions:
                    del self._subscriptions[subscription.topic]

    async def wait(self, topic: str, timeout: float) -> bool:
        with self.subscribe(topic) as subscription:
            return await subscription.wait(timeout)
