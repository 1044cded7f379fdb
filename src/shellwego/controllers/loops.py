"""The control plane's background loops: rollout, node liveness and housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.concurrency import run_in_threadpool

from shellwego.services import domains, nodes, throttle
from shellwego.services.context import Context

from . import rollout

log = logging.getLogger(__name__)


async def rollout_loop(ctx: Context, stop: asyncio.Event, interval: float = 0.5) -> None:
    """A pass on every "rollout" notification (deploys, health changes, drains, nodes
    down) and every ``interval`` anyway; one notified during a pass runs the next at once."""
    with ctx.bus.subscribe("rollout") as wake:
        while not stop.is_set():
            try:
                await run_in_threadpool(rollout.pass_once, ctx)
            except Exception:
                log.exception("rollout pass failed; retrying")
            with contextlib.suppress(Exception):
                await wake.wait(interval)


async def liveness_loop(ctx: Context, stop: asyncio.Event) -> None:
    """Mark nodes down after missed heartbeats; the rollout then moves their instances."""
    while not stop.is_set():
        try:
            down = await run_in_threadpool(nodes.mark_down_stale, ctx)
            if down:
                log.warning("nodes marked down after missed heartbeats: %s", ", ".join(down))
        except Exception:
            log.exception("liveness check failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ctx.settings.heartbeat_interval)


# how often the housekeeping pass runs
HOUSEKEEPING_SECONDS = 60.0


def housekeeping_pass(ctx: Context) -> None:
    """Remove what has expired: pending custom domains past their TTL (each with a
    ``domain.expired`` event) and login-failure counts old enough to be forgotten."""
    expired = domains.expire_pending(ctx)
    if expired:
        log.info("unverified domains expired: %s", ", ".join(expired))
    throttle.forget_stale(ctx)


async def housekeeping_loop(
    ctx: Context, stop: asyncio.Event, interval: float = HOUSEKEEPING_SECONDS
) -> None:
    """:func:`housekeeping_pass` every ``interval`` seconds. Every replica may run it:
    each expired row is removed once (rows are locked while they are removed)."""
    while not stop.is_set():
        try:
            await run_in_threadpool(housekeeping_pass, ctx)
        except Exception:
            log.exception("housekeeping pass failed; retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
