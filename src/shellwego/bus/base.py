"""The bus only wakes waiters: the database stays the source of truth.

``notify(topic)`` may be called from any thread (services run in worker threads);
``wait(topic, version, timeout)`` is awaited by blocking queries.
"""

from __future__ import annotations

from typing import Protocol


class Bus(Protocol):
    @property
    def closed(self) -> bool:
        """True once ``close`` ran: blocking queries should answer now."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def notify(self, topic: str) -> None:
        """Wake everyone waiting on ``topic``, here and on other replicas."""

    async def wait(self, topic: str, timeout: float) -> bool:
        """Wait until ``topic`` is notified or ``timeout`` passes; True when woken."""
        ...
