"""Log shipping: follow every running instance's output and POST it in batches.

Lines are batched for at most ``batch_seconds`` or ``batch_lines`` lines. While the
control plane is unreachable they are buffered (the oldest dropped beyond
``buffer_lines``) and retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from shellwego.errors import ShellWeGoError, Unauthenticated, Unavailable
from shellwego.runtime.driver import Driver, InstanceState, LogLine

from .reconcile import ACTIVE

log = logging.getLogger(__name__)

LINE_MAX = 16384
TAIL_ON_ADOPT = 200

Ship = Callable[[list[dict[str, Any]]], Awaitable[None]]


def utc(ts: datetime) -> datetime:
    """Runtimes may report naive timestamps: they are UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def iso(ts: datetime) -> str:
    return utc(ts).isoformat().replace("+00:00", "Z")


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(timeout, 0.0))


class LogShipper:
    def __init__(
        self,
        driver: Driver,
        ship: Ship,
        *,
        batch_lines: int = 500,
        batch_seconds: float = 0.2,
        buffer_lines: int = 20000,
        retry_delay: Callable[[int], float] = lambda n: min(5.0, 0.2 * 2 ** (n - 1)),
    ) -> None:
        self.driver = driver
        self.ship = ship
        self.batch_lines = batch_lines
        self.batch_seconds = batch_seconds
        self.buffer_lines = buffer_lines
        self.retry_delay = retry_delay
        self._buffer: deque[dict[str, Any]] = deque()
        self._more = asyncio.Event()
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._since: dict[str, datetime] = {}
        self._dropped = 0

    def adopt(self, instance_ids: Iterable[str], since: datetime) -> None:
        """Instances already running before this agent: their lines up to ``since`` were
        shipped by the previous agent process."""
        for iid in instance_ids:
            self._since[iid] = utc(since)

    def sync(self, states: Mapping[str, InstanceState]) -> None:
        """Follow every instance that is running (or restarting), and only those."""
        for iid, task in list(self._followers.items()):
            if task.done():
                del self._followers[iid]
        for iid, state in states.items():
            if state in ACTIVE and iid not in self._followers:
                self._followers[iid] = asyncio.create_task(self._follow(iid), name=f"logs-{iid}")
        for iid in list(self._since):
            if iid not in states:
                del self._since[iid]

    async def close(self) -> None:
        tasks = list(self._followers.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._followers.clear()

    async def _follow(self, instance_id: str) -> None:
        since = self._since.get(instance_id)
        tail = TAIL_ON_ADOPT if since is not None else None
        try:
            async for line in self.driver.logs(instance_id, follow=True, tail=tail):
                stamp = utc(line.timestamp)
                if since is not None and stamp <= since:
                    continue
                self._enqueue(line)
                self._since[instance_id] = stamp
        except ShellWeGoError as exc:
            log.debug("log stream of %s ended: %s", instance_id, exc.detail)
        except Exception:
            log.exception("log stream of %s failed", instance_id)

    def _enqueue(self, line: LogLine) -> None:
        if len(self._buffer) >= self.buffer_lines:
            self._buffer.popleft()
            self._dropped += 1
        self._buffer.append(
            {
                "instance_id": line.instance_id,
                "stream": line.stream,
                "timestamp": iso(line.timestamp),
                "line": line.line[:LINE_MAX],
            }
        )
        self._more.set()

    async def run(self) -> None:
        """Ship batches until cancelled; raises :class:`Unauthenticated` on a 401."""
        failures = 0
        while True:
            if not self._buffer:
                self._more.clear()
                await self._more.wait()
                continue
            deadline = time.monotonic() + self.batch_seconds
            while len(self._buffer) < self.batch_lines:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._more.clear()
                await _wait(self._more, remaining)
            count = min(self.batch_lines, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(count)]
            try:
                await self.ship(batch)
            except Unauthenticated:
                raise
            except Unavailable:
                self._buffer.extendleft(reversed(batch))
                while len(self._buffer) > self.buffer_lines:
                    self._buffer.pop()
                    self._dropped += 1
                failures += 1
                await asyncio.sleep(self.retry_delay(failures))
                continue
            except ShellWeGoError as exc:
                log.error("control plane refused %d log line(s): %s", len(batch), exc.detail)
            failures = 0
            if self._dropped:
                log.warning("dropped %d log line(s) while buffering", self._dropped)
                self._dropped = 0
