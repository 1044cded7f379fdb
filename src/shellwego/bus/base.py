"""The bus only wakes waiters: the database stays the source of truth.

``notify(topic)`` may be called from any thread (services run in worker threads);
``wait(topic, timeout)`` is awaited by one-off waits. A blocking query — read the state,
answer if it changed, otherwise wait for a wake-up and read again — subscribes *before*
its first read (:func:`wait_until`), so a notification that lands between a read and the
wait is kept for that wait instead of being lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol


class Subscription(Protocol):
    """Notifications of one topic, kept from the moment of subscribing until closed."""

    async def wait(self, timeout: float) -> bool:
        """True at once when notified since the last wait, else wait up to ``timeout``."""
        ...

    def take(self) -> bool:
        """Whether notified since the last wait or take (which it consumes); never blocks."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Subscription: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class Bus(Protocol):
    @property
    def closed(self) -> bool:
        """True once ``close`` ran: blocking queries should answer now."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def notify(self, topic: str) -> None:
        """Wake everyone waiting on ``topic``, here and on other replicas."""

    def subscribe(self, topic: str) -> Subscription:
        """Start keeping notifications of ``topic`` (call from the event loop's thread)."""
        ...

    async def wait(self, topic: str, timeout: float) -> bool:
        """Wait until ``topic`` is notified or ``timeout`` passes; True when woken."""
        ...


async def wait_until(
    bus: Bus,
    topic: str,
    ready: Callable[[], Awaitable[bool]],
    timeout: float,
    *,
    recheck: float = 5.0,
) -> bool:
    """Await ``ready()`` until it is true (→ True) or ``timeout`` passes (→ False).

    Subscribed to ``topic`` before the first check, so a change committed (and notified)
    while ``ready`` runs wakes the next wait at once. ``ready`` is re-checked at least every
    ``recheck`` seconds all the same: a lost message costs latency, never an answer.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    with bus.subscribe(topic) as subscription:
        while True:
            if await ready():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0 or bus.closed:
                return False
            await subscription.wait(min(remaining, recheck))
