"""The control plane's background loops: rollout, node liveness and housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from starlette.concurrency import run_in_threadpool

from shellwego.errors import LeaseLost
from shellwego.services import domains, nodes, releasephase, throttle
from shellwego.services.context import Context
from shellwego.tasks import spawn_background

from . import rollout

log = logging.getLogger(__name__)


class ReleasePhases:
    """The release commands this control plane runs (see ``services/releasephase.py``):
    due ones are claimed and started after every rollout pass; on stop they are stopped
    and handed back, so the next control plane runs them again at once."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.running: dict[str, asyncio.Task[bool]] = {}

    async def start_due(self) -> None:
        if self.ctx.oneoff_driver is None:
            return  # a control plane without a one-off runtime runs no release commands
        skip = frozenset(self.running)
        for claim in await run_in_threadpool(releasephase.claim_due, self.ctx, skip):
            task = spawn_background(releasephase.run(self.ctx, claim))
            self.running[claim.deployment_id] = task
            task.add_done_callback(functools.partial(self._ended, claim.deployment_id))

    def _ended(self, deployment_id: str, task: asyncio.Task[bool]) -> None:
        self.running.pop(deployment_id, None)
        if not task.cancelled() and task.exception() is not None:
            # claimed still: taken over (run again) once the claim is stale
            log.error(
                "release command of deployment %s failed to finish: %r",
                deployment_id,
                task.exception(),
            )

    async def close(self) -> None:
        tasks = dict(self.running)
        for task in tasks.values():
            task.cancel()
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await run_in_threadpool(releasephase.release_claims, self.ctx, list(tasks))


async def rollout_loop(ctx: Context, stop: asyncio.Event, interval: float = 0.5) -> None:
    """A pass on every "rollout" notification (deploys, health changes, drains, nodes
    down) and every ``interval`` anyway; one notified during a pass runs the next at once.
    Release commands that are due start after each pass."""
    phases = ReleasePhases(ctx)
    with ctx.bus.subscribe("rollout") as wake:
        try:
            while not stop.is_set():
                try:
                    await run_in_threadpool(rollout.pass_once, ctx)
                    await phases.start_due()
                except LeaseLost as exc:  # its leader stops it in a moment
                    log.warning("rollout pass refused: %s", exc)
                except Exception:
                    log.exception("rollout pass failed; retrying")
                with contextlib.suppress(Exception):
                    await wake.wait(interval)
        finally:
            with contextlib.suppress(Exception):
                await phases.close()


async def liveness_loop(ctx: Context, stop: asyncio.Event) -> None:
    """Mark nodes down after missed heartbeats; the rollout then moves their instances."""
    while not stop.is_set():
        try:
            down = await run_in_threadpool(nodes.mark_down_stale, ctx)
            if down:
                log.warning("nodes marked down after missed heartbeats: %s", ", ".join(down))
        except LeaseLost as exc:
            log.warning("liveness check refused: %s", exc)
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
    """:func:`housekeeping_pass` every ``interval`` seconds, on the leader (see
    ``leader.py``); each expired row is removed once all the same (rows are locked while
    they are removed)."""
    while not stop.is_set():
        try:
            await run_in_threadpool(housekeeping_pass, ctx)
        except LeaseLost as exc:
            log.warning("housekeeping pass refused: %s", exc)
        except Exception:
            log.exception("housekeeping pass failed; retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
