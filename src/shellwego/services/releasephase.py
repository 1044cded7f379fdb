"""The release phase (Heroku's): a release's ``release`` command runs once before it is
rolled out.

A deployment of a release with a release command starts ``pending`` (see
``deployments.start``). The control plane claims it (``releasing``), runs the command as a
one-off in the new release's slug and environment, sandboxed like ``shellwego run``, and
then either lets the rollout begin (``rolling``) or fails the deployment: the release is
never rolled out and the previous one keeps serving. Either way the command's output is
kept in the app's logs (source ``release``) and one event says how it ended
(``release.succeeded`` / ``release.failed``, with the exit code).

A claim is renewed while the command runs; one left unrenewed for ``CLAIM_SECONDS``
(its control plane died) is taken over and the command runs again, so a release command
must be safe to run twice, as on Heroku (migrations are).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool

from shellwego.errors import ShellWeGoError
from shellwego.models import (
    App,
    Deployment,
    DeploymentStatus,
    Event,
    LogLine,
    Release,
    new_id,
)
from shellwego.models.values import RELEASE_PROCESS
from shellwego.runtime.process import EXEC_TIMEOUT_EXIT
from shellwego.store import repository as repo

from . import deployments, logs, oneoff
from .context import Context, wake_after_commit

log = logging.getLogger(__name__)

CLAIM_SECONDS = 60.0  # a claim not renewed for this long is taken over
RENEW_SECONDS = 15.0
CHECK_SECONDS = 1.0  # how often a running command looks whether its rollout still stands
TIMEOUT_SECONDS = 3600.0  # a release command that runs longer fails the release
MAX_LINES = 2000  # of its output kept in the logs (the last ones)
EVENTS = ("release.succeeded", "release.failed")


@dataclass(frozen=True, slots=True)
class Claim:
    """A deployment whose release command this control plane runs now."""

    deployment_id: str
    app_id: str
    release_id: str
    version: int
    command: str


def claim_due(ctx: Context, skip: frozenset[str] = frozenset()) -> list[Claim]:
    """Claim every deployment whose release command is due: pending ones, and those whose
    claim was not renewed in time. ``skip``: deployments this process runs already."""
    claims = []
    with ctx.db.session() as s:
        now = ctx.clock.now()
        status: sa.ColumnElement[str] = Deployment.status  # type: ignore[assignment]
        updated: sa.ColumnElement[datetime] = Deployment.updated_at  # type: ignore[assignment]
        due = repo.lock_batch(
            s,
            Deployment,
            sa.or_(
                status == DeploymentStatus.PENDING.value,
                sa.and_(
                    status == DeploymentStatus.RELEASING.value,
                    updated < now - timedelta(seconds=CLAIM_SECONDS),
                ),
            ),
            limit=20,
        )
        for dep in due:
            if dep.id in skip:
                continue
            release = repo.require(s, Release, "release", id=dep.release_id)
            if dep.status == DeploymentStatus.RELEASING:
                log.warning("release command of %s v%s taken over", dep.app_id, release.version)
            dep.status = DeploymentStatus.RELEASING
            dep.updated_at = now
            claims.append(
                Claim(
                    dep.id,
                    dep.app_id,
                    release.id,
                    release.version,
                    release.process_types.get(RELEASE_PROCESS, ""),
                )
            )
    return claims


def _still_releasing(ctx: Context, claim: Claim, renew: bool) -> bool:
    with ctx.db.session() as s:
        dep = repo.get(s, Deployment, id=claim.deployment_id)
        if dep is None or dep.status != DeploymentStatus.RELEASING:
            return False
        if renew:
            dep.updated_at = ctx.clock.now()
        return True


def release_claims(ctx: Context, deployment_ids: list[str]) -> None:
    """Hand claims back (this control plane stops): the next one runs them at once."""
    if not deployment_ids:
        return
    with ctx.db.session() as s:
        for dep_id in deployment_ids:
            dep = repo.get(s, Deployment, id=dep_id)
            if dep is not None and dep.status == DeploymentStatus.RELEASING:
                dep.status = DeploymentStatus.PENDING
                dep.updated_at = ctx.clock.now()


def _prepare(ctx: Context, claim: Claim) -> tuple[App, Release, dict[str, str]]:
    with ctx.db.session() as s:
        app = repo.require(s, App, "app", id=claim.app_id)
        release = repo.require(s, Release, "release", id=claim.release_id)
        return app, release, oneoff.environment(ctx, s, release)


async def run(ctx: Context, claim: Claim, timeout: float = TIMEOUT_SECONDS) -> bool:
    """Run a claimed release command and record how it ended; True when it succeeded.

    The command is stopped if its deployment ends meanwhile (superseded by a newer
    release, the app stopped or deleted); nothing is recorded then but its output."""
    work = asyncio.ensure_future(_execute(ctx, claim, timeout))
    last_renewal = asyncio.get_running_loop().time()
    while not work.done():
        await asyncio.wait({work}, timeout=CHECK_SECONDS)
        if work.done():
            break
        now = asyncio.get_running_loop().time()
        renew = now - last_renewal >= RENEW_SECONDS
        if renew:
            last_renewal = now
        if not await run_in_threadpool(_still_releasing, ctx, claim, renew):
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return False
    exit_code, output, instance_id = work.result()
    return await run_in_threadpool(finish, ctx, claim, exit_code, output, instance_id)


async def _execute(ctx: Context, claim: Claim, timeout: float) -> tuple[int, str, str]:
    instance_id = new_id()  # what its output is kept under, even when it cannot start
    try:
        app, release, env = await run_in_threadpool(_prepare, ctx, claim)
        outcome = await oneoff.execute(
            ctx,
            app,
            release,
            env,
            ["/bin/sh", "-c", claim.command],
            timeout,
            process_type=RELEASE_PROCESS,
            instance_id=instance_id,
        )
    except ShellWeGoError as exc:
        return 1, f"the release command could not run: {exc}", instance_id
    if outcome.exit_code == EXEC_TIMEOUT_EXIT:
        outcome = oneoff.Outcome(
            outcome.exit_code,
            outcome.output + f"\nthe release command ran past {timeout:g} s and was stopped",
            outcome.instance_id,
        )
    return outcome.exit_code, outcome.output, outcome.instance_id


def finish(ctx: Context, claim: Claim, exit_code: int, output: str, instance_id: str) -> bool:
    """Keep the output, record the event, and start the rollout or fail the deployment."""
    ok = exit_code == 0
    lines = output.splitlines()[-MAX_LINES:]
    with ctx.db.session() as s:
        dep = repo.lock_batch(s, Deployment, Deployment.id == claim.deployment_id, limit=1)
        app = repo.get(s, App, id=claim.app_id)
        if not dep or app is None:
            return False
        deployment = dep[0]
        logs.add_lines(ctx, s, app.id, RELEASE_PROCESS, lines, instance_id)
        if deployment.status != DeploymentStatus.RELEASING:
            return False  # it ended meanwhile: nothing rolls out either way
        now = ctx.clock.now()
        version = f"v{claim.version}"
        data: dict[str, object] = {
            "deployment_id": deployment.id,
            "release": claim.version,
            "exit_code": exit_code,
            "instance_id": instance_id,
        }
        if ok:
            deployment.status = DeploymentStatus.ROLLING
            deployment.updated_at = now
            deployments.record_event(
                ctx,
                s,
                app,
                EVENTS[0],
                f"Release command of {version} succeeded",
                data,
                key=deployments.once(EVENTS[0], deployment.id),
            )
            wake_after_commit(ctx, s, "rollout")
            return True
        serving = repo.get(s, Release, id=app.current_release_id or "")
        keeps = f"v{serving.version} keeps serving" if serving else "nothing was serving"
        error = (
            f"release command of {version} failed (exit code {exit_code}): "
            f"{version} was not rolled out, {keeps}"
        )
        deployments.mark_failed(ctx, deployment, app, error)
        deployments.record_event(
            ctx, s, app, EVENTS[1], error, data, key=deployments.once(EVENTS[1], deployment.id)
        )
        wake_after_commit(ctx, s, "rollout")
        return False


def command_of(ctx: Context, release_id: str) -> str:
    with ctx.db.session() as s:
        release = repo.require(s, Release, "release", id=release_id)
        return release.process_types.get(RELEASE_PROCESS, "")


def output_of(ctx: Context, deployment_id: str) -> tuple[str, list[str]] | None:
    """How a deployment's release command ended (its event's message) and its output, once
    it has; None before (or without) one."""
    with ctx.db.session() as s:
        dep = repo.get(s, Deployment, id=deployment_id)
        if dep is None:
            return None
        data = sa.type_coerce(Event.data, sa.JSON)
        found = repo.find_all(
            s,
            Event,
            Event.type.in_(EVENTS),  # type: ignore[attr-defined]
            data["deployment_id"].as_string() == deployment_id,
            app_id=dep.app_id,
        )
        if not found:
            return None
        event = found[-1]
        instance_id = event.data.get("instance_id")
        lines = (
            repo.find_all(s, LogLine, app_id=dep.app_id, instance_id=instance_id)
            if instance_id
            else []
        )
        return event.message, [ln.line for ln in sorted(lines, key=lambda ln: ln.id)]
