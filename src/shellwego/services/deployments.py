"""Deployments: the health-gated rollout of a release (or a restart of the current one)."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shellwego.errors import NotFound
from shellwego.logconfig import DEPLOYS, RESERVED
from shellwego.models import (
    App,
    AppStatus,
    Deployment,
    DeploymentStatus,
    DeploymentStrategy,
    DeployPolicy,
    Event,
    Release,
    new_id,
)
from shellwego.models.values import RELEASE_PROCESS
from shellwego.store import after_commit
from shellwego.store import repository as repo

from . import apps as app_service
from .context import Context, Principal, wake_after_commit

steps = logging.getLogger(DEPLOYS)

# not finished: waiting for or running its release command, or rolling out
RELEASE_PHASE = (DeploymentStatus.PENDING.value, DeploymentStatus.RELEASING.value)
ACTIVE = (*RELEASE_PHASE, DeploymentStatus.ROLLING.value)


def active(s: Session) -> list[Deployment]:
    status: Any = Deployment.status
    return repo.find_all(s, Deployment, status.in_(ACTIVE))


def active_for(
    s: Session, app_id: str, statuses: tuple[str, ...] = ACTIVE
) -> list[Deployment]:
    return repo.find_all(
        s,
        Deployment,
        Deployment.status.in_(statuses),  # type: ignore[attr-defined]
        app_id=app_id,
    )


def release_command(s: Session, release: Release) -> str | None:
    """The command of ``release``'s release phase: its Procfile's ``release`` entry, run
    before its first rollout only (a restart or a resize runs none)."""
    command = release.process_types.get(RELEASE_PROCESS)
    if not command or repo.count(s, Deployment, release_id=release.id) > 0:
        return None
    return command


def start(
    ctx: Context,
    s: Session,
    who: Principal | None,
    app: App,
    release: Release,
    *,
    reason: str,
    surge: int | None = None,
    max_unavailable: int | None = None,
    strategy: DeploymentStrategy = DeploymentStrategy.ROLLING,
) -> Deployment:
    """Begin rolling ``release`` out; an older rollout of the app is superseded.

    A release with a release command waits for it first (``pending``: the release
    phase, see ``services/releasephase.py``). ``surge`` and ``max_unavailable`` override
    the app's deploy settings, as they are now, for this one rollout.
    """
    policy = _policy(app, surge, max_unavailable)
    phase = release_command(s, release)
    now = ctx.clock.now()
    for old in active_for(s, app.id):
        old.status = DeploymentStatus.SUPERSEDED
        old.finished_at = now
        old.updated_at = now
    total = sum(p.count for t, p in app.formation.items() if t in release.process_types)
    deployment = Deployment(
        id=new_id(),
        app_id=app.id,
        organization_id=app.organization_id,
        release_id=release.id,
        previous_release_id=app.current_release_id,
        status=DeploymentStatus.PENDING if phase else DeploymentStatus.ROLLING,
        strategy=strategy,
        surge=policy.surge,
        max_unavailable=policy.max_unavailable,
        instances_total=total,
        instances_ready=0,
        error=None,
        finished_at=None,
        created_by=who.user_id if who else None,
        created_at=now,
        updated_at=now,
    )
    repo.add(s, deployment, conflict="deployment exists")
    app.status = AppStatus.DEPLOYING
    app.updated_at = now
    record_event(
        ctx,
        s,
        app,
        "deploy.started",
        f"Deploying v{release.version}: {reason}"
        + (" (its release command runs first)" if phase else ""),
        {"deployment_id": deployment.id, "release": release.version},
        key=once("deploy.started", deployment.id),
    )
    wake_after_commit(ctx, s, "rollout")
    return deployment


def _policy(app: App, surge: int | None, max_unavailable: int | None) -> DeployPolicy:
    """The app's deploy settings with one rollout's overrides."""
    return DeployPolicy(
        surge=app.deploy.surge if surge is None else surge,
        max_unavailable=app.deploy.max_unavailable if max_unavailable is None else max_unavailable,
    )


def mark_failed(ctx: Context, dep: Deployment, app: App, error: str) -> None:
    """End a deployment as failed: the app goes on with the release it had, if any."""
    now = ctx.clock.now()
    dep.status = DeploymentStatus.FAILED
    dep.error = error
    dep.finished_at = now
    dep.updated_at = now
    app.status = AppStatus.RUNNING if app.current_release_id else AppStatus.ERROR
    app.updated_at = now


def record_event(
    ctx: Context,
    s: Session,
    app: App,
    kind: str,
    message: str,
    data: dict[str, object],
    *,
    key: str | None = None,
) -> None:
    """An event of the app (what ``shellwego events`` lists), logged as a deploy step.

    ``key`` (e.g. :func:`once`): the event is recorded once per key, however often its
    step runs; a second one is not added (and the unique key refuses one that a
    concurrent transaction adds, rolling that transaction back)."""
    if key is not None:
        if any(isinstance(o, Event) and o.key == key for o in s.new):
            return
        with s.no_autoflush:
            if repo.get(s, Event, key=key) is not None:
                return
    now = ctx.clock.now()
    extra = {
        "app": app.name,
        "event": kind,
        **{k: v for k, v in data.items() if isinstance(v, str | int) and k not in RESERVED},
    }
    after_commit(s, lambda: steps.info("%s: %s", app.name, message, extra=extra))
    s.add(
        Event(
            id=new_id(),
            organization_id=app.organization_id,
            app_id=app.id,
            type=kind,
            message=message,
            data=data,
            key=key,
            created_at=now,
            updated_at=now,
        )
    )


def once(kind: str, deployment_id: str) -> str:
    """The idempotency key of a deployment's step event: one ``kind`` per deployment."""
    return f"{kind}:{deployment_id}"


def list_page(
    ctx: Context, who: Principal, app_ref: str, cursor: str | None, limit: int
) -> repo.Page[Deployment]:
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        return repo.page(s, Deployment, cursor=cursor, limit=limit, app_id=app.id)


def get(ctx: Context, who: Principal, app_ref: str, deployment_id: str) -> Deployment:
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        dep = repo.get(s, Deployment, id=deployment_id, app_id=app.id)
        if dep is None:
            raise NotFound("deployment not found")
        return dep


def events_page(
    ctx: Context,
    who: Principal,
    app_ref: str,
    cursor: str | None,
    limit: int,
    deployment_id: str | None = None,
    *,
    newest_first: bool = False,
) -> repo.Page[Event]:
    """The app's events, oldest first (or newest first); ``deployment_id`` keeps only
    that rollout's."""
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        where = []
        if deployment_id is not None:
            data = sa.type_coerce(Event.data, sa.JSON)
            where.append(data["deployment_id"].as_string() == deployment_id)
        return (repo.page_newest_first if newest_first else repo.page)(
            s,
            Event,
            cursor=cursor,
            limit=limit,
            where=where,
            organization_id=app.organization_id,
            app_id=app.id,
        )


def of_release(ctx: Context, who: Principal, app_ref: str, version: int) -> tuple[Deployment, str]:
    """The newest deployment of release vN (its rollout, or the latest restart of it) and
    the app's name."""
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        release = repo.get(s, Release, app_id=app.id, version=version)
        if release is None:
            raise NotFound(f"release v{version} of {app.name} not found")
        found = repo.newest(s, Deployment, 1, release_id=release.id)
        if not found:
            raise NotFound(f"release v{version} of {app.name} was never rolled out")
        return found[0], app.name


def status_of(ctx: Context, deployment_id: str) -> Deployment:
    with ctx.db.session() as s:
        return repo.require(s, Deployment, "deployment", id=deployment_id)
