"""The leader: the one replica that runs the control plane's cluster-wide loops.

Every replica runs a :class:`Leadership`. It tries to take or renew the ``controllers``
lease (``services/leases.py``) every ``renew`` seconds; while it holds the lease it runs
the singletons it was given, each with a context whose every write is fenced by the
lease's token; when it loses the lease (taken over, expired, its database unreachable
past the expiry) it stops them. A replica that stops cleanly gives the lease up, so
another takes over on its next try; one that dies is replaced once its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from shellwego.services import leases
from shellwego.services.context import Context

from . import loops

log = logging.getLogger(__name__)

# a singleton: a loop that runs on one replica at a time, until its event is set
Singleton = Callable[[Context, asyncio.Event], Coroutine[Any, Any, None]]

# how long a lease lasts without renewal, and how often its holder renews it: a dead
# leader's loops run again elsewhere within LEASE_SECONDS + RENEW_SECONDS
LEASE_SECONDS = 6.0
RENEW_SECONDS = 2.0
# how long a stopping singleton may take to finish its pass before it is cancelled
STOP_SECONDS = 5.0


def singletons() -> dict[str, Singleton]:
    """The control plane's cluster-wide loops (a later one, webhooks, backups, metering,
    is added here). Per-edge route sync is not one: each edge loads its own table."""
    return {
        "rollout": loops.rollout_loop,
        "liveness": loops.liveness_loop,
        "housekeeping": loops.housekeeping_loop,
    }


class Leadership:
    """Holds the lease ``name`` when it can, and runs ``loops`` while it does."""

    def __init__(
        self,
        ctx: Context,
        loops: Mapping[str, Singleton],
        *,
        name: str = leases.CONTROLLERS,
        holder: str | None = None,
        ttl: float = LEASE_SECONDS,
        renew: float = RENEW_SECONDS,
    ) -> None:
        if renew * 2 >= ttl:
            raise ValueError("a lease must be renewed at least twice per lease period")
        self.ctx = ctx
        self.loops = dict(loops)
        self.name = name
        self.holder = holder or leases.holder_id()
        self.ttl = ttl
        self.renew = renew
        self.held: leases.Held | None = None
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()

    @property
    def leading(self) -> bool:
        return self.held is not None and bool(self.tasks)

    async def step(self) -> leases.Held | None:
        """One try at taking or renewing the lease; the loops start or stop to match."""
        try:
            held = await run_in_threadpool(
                leases.acquire, self.ctx, self.name, self.holder, self.ttl
            )
        except Exception:
            log.exception("lease %s: could not take or renew it", self.name)
            # keep the loops until the lease expires: their writes are fenced anyway
            held = self.held
            if held is not None and held.expires_at <= self.ctx.clock.now():
                held = None
        if self.held is not None and (held is None or held.token != self.held.token):
            log.warning("lease %s lost (token %d): loops stopped", self.name, self.held.token)
            await self.stop_loops()
        if held is not None and not self.tasks:
            log.info("lease %s taken (token %d): loops started", self.name, held.token)
            self._stopping = asyncio.Event()
        if held is not None:
            self._start(held)  # the loops not running: all of them, or one that ended
        self.held = held
        return held

    def _start(self, held: leases.Held) -> None:
        ctx = leases.fenced(self.ctx, held)
        for name, loop in self.loops.items():
            if name in self.tasks and not self.tasks[name].done():
                continue
            task = asyncio.get_running_loop().create_task(
                loop(ctx, self._stopping), name=f"{self.name}:{name}"
            )
            task.add_done_callback(functools.partial(self._ended, name))
            self.tasks[name] = task

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("singleton %s ended: %r", name, task.exception())

    async def stop_loops(self) -> None:
        """Stop the loops: each finishes its pass (up to STOP_SECONDS), then is cancelled."""
        self._stopping.set()
        tasks, self.tasks = self.tasks, {}
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, STOP_SECONDS)

    def abandon(self) -> None:
        """Cancel the loops and forget the lease without giving it up, as a replica that
        died would: it expires on its own (``run`` then ends without releasing it)."""
        for task in self.tasks.values():
            task.cancel()
        self.tasks = {}
        self.held = None

    async def run(self, stop: asyncio.Event) -> None:
        """Take or renew the lease every ``renew`` seconds until ``stop``; then stop the
        loops and give the lease up."""
        try:
            while not stop.is_set():
                await self.step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.renew)
        finally:
            await self.stop_loops()
            held, self.held = self.held, None
            if held is not None:
                with contextlib.suppress(Exception):
                    await run_in_threadpool(leases.release, self.ctx, held)
