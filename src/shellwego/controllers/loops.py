"""The control plane's background loops: rollout and node liveness."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.concurrency import run_in_threadpool

from shellwego.services import nodes
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
