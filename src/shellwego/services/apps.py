"""Apps: create, read, update, delete; addressable by name or id within an organization.

Names are unique across the platform, case-insensitively: ``<name>.<base domain>`` is
the app's hostname. Lookups stay scoped: another organization's app is 404.

Deleting is two-phase, like a Kubernetes finalizer: ``delete`` makes the app invisible at
once (404, out of lists and the edge, its name free) and asks its instances to stop; the
rollout controller removes the row, and with it everything of the app, once those
instances are seen gone (``controllers/rollout.py``). Until then the instance rows keep
their ports taken, so no new instance is given a port a stopping process still holds.
"""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from shellwego.errors import NotFound, Unavailable
from shellwego.models import (
    App,
    AppCreate,
    AppStatus,
    DeploymentStatus,
    DesiredState,
    Domain,
    Instance,
    ProcessFormation,
    Release,
    Role,
    Secret,
    UidLease,
    new_id,
)
from shellwego.store import repository as repo

from . import placement
from .context import Context, Principal, wake_after_commit
from .organizations import require_role

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def find(s: Session, org_id: str, ref: str) -> App:
    """An app of this organization by id or (case-insensitive) name; else 404 (a deleted
    app, still being removed, included)."""
    live = {"organization_id": org_id, "deleted_at": None}
    app = repo.get(s, App, id=ref, **live) if ULID.match(ref) else None
    app = app or repo.get(s, App, name=ref, **live)
    if app is None:
        raise NotFound(f"app {ref!r} not found")
    return app


def taken(name: str) -> str:
    """App names are unique platform-wide (each is a hostname under the base domain);
    the message never says which organization holds the name."""
    return f"app name {name!r} is already taken"


def get(ctx: Context, who: Principal, ref: str) -> App:
    with ctx.db.session(write=False) as s:
        return find(s, who.organization_id, ref)


def list_page(
    ctx: Context, who: Principal, cursor: str | None, limit: int, status: str | None = None
) -> repo.Page[App]:
    filters = {"status": status} if status else {}
    with ctx.db.session(write=False) as s:
        return repo.page(
            s,
            App,
            cursor=cursor,
            limit=limit,
            organization_id=who.organization_id,
            deleted_at=None,
            **filters,
        )


def create(ctx: Context, who: Principal, body: AppCreate) -> App:
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        now = ctx.clock.now()
        app = App(
            id=new_id(),
            organization_id=who.organization_id,
            name=body.name,
            health_check=body.health_check,
            redirect_https=body.redirect_https,
            runtime=body.runtime,
            deploy=body.deploy,
            placement=body.placement,
            status=AppStatus.CREATED,
            formation={"web": ProcessFormation(count=1)},
            current_release_id=None,
            created_by=who.user_id,
            formation_error=None,
            deleted_at=None,
            created_at=now,
            updated_at=now,
        )
        placement.check_constraints(s, app)
        wake_after_commit(ctx, s, "edge")  # its host is routed (to nothing yet) at once
        repo.add(s, app, conflict=taken(body.name))
        app.uid = lease_uid(ctx, s, app.id)
        return app


def lease_uid(ctx: Context, s: Session, app_id: str) -> int:
    """The next uid of the platform's range no app ever had, leased to ``app_id`` for good
    (a deleted app's uid is never handed out again)."""
    first, last = ctx.settings.app_uids
    repo.one_writer(s, UidLease)  # one lease at a time, across replicas too
    top = repo.max_of(s, UidLease, "uid", UidLease.uid.between(first, last))  # type: ignore[attr-defined]
    uid = first if top is None else int(top) + 1
    if uid > last:
        raise Unavailable(
            f"every uid of SHELLWEGO_APP_UIDS ({first}-{last}) has been handed out: the "
            f"operator must configure a larger range"
        )
    now = ctx.clock.now()
    s.add(UidLease(id=new_id(), uid=uid, app_id=app_id, created_at=now, updated_at=now))
    s.flush()
    return uid


def update(ctx: Context, who: Principal, ref: str, changes: dict[str, object]) -> App:
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        app = find(s, who.organization_id, ref)
        placement_before = app.placement
        for key, value in changes.items():
            setattr(app, key, value)
        app.updated_at = ctx.clock.now()
        # written first: a taken name is a conflict here, not when a later query flushes
        repo.save(s, app, conflict=taken(str(changes.get("name", app.name))))
        if app.placement.constraints != placement_before.constraints:
            _check_constraints(ctx, s, app)
        # hostnames and the HTTPS redirect are the edge's: it applies them at once
        wake_after_commit(ctx, s, "edge")
        return app


def _check_constraints(ctx: Context, s: Session, app: App) -> None:
    """New placement constraints must be satisfiable, and the formation fit under them."""
    placement.check_constraints(s, app)
    if app.current_release_id is not None:
        release = repo.require(s, Release, "release", id=app.current_release_id)
        placement.check_formation(s, app, release, app.formation, app.formation, moved=True)
    # instances on nodes that no longer match move: the rollout controller re-plans them
    wake_after_commit(ctx, s, "rollout")


def tombstone(app_id: str) -> str:
    """The name a deleted app holds until its row is removed: never a valid app name (one
    starts with a letter), so it can neither collide with nor be found by a name typed."""
    return f"~deleted-{app_id}"


def retire(ctx: Context, s: Session, app: App) -> bool:
    """End whatever a deleted app still has going: its rollouts fail, its instances are
    asked to stop (their agents and the edge are woken). True when there was any.

    The finalizer repeats it on every pass, so what a request begun before the delete
    placed or rolled out after it is stopped too.
    """
    from .deployments import active_for  # that module looks apps up through this one

    now = ctx.clock.now()
    rollouts = active_for(s, app.id)
    for dep in rollouts:
        dep.status = DeploymentStatus.FAILED
        dep.error = "the app was deleted"
        dep.finished_at = now
        dep.updated_at = now
    live = repo.find_all(s, Instance, app_id=app.id, desired_state=DesiredState.RUNNING.value)
    if live:
        placement.stop(ctx, s, live)
    if rollouts:
        wake_after_commit(ctx, s, "rollout")  # deploys being followed end now
    return bool(rollouts or live)


def delete(ctx: Context, who: Principal, ref: str) -> App:
    """Delete an app, in one transaction: gone for its users at once, its name free to
    reuse, its custom domains released and its secrets hidden; its instances stop. The
    row goes once they are gone (see the module's docstring)."""
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        app = find(s, who.organization_id, ref)
        now = ctx.clock.now()
        app.deleted_at = now
        app.status = AppStatus.DELETING
        app.name = tombstone(app.id)
        app.updated_at = now
        for domain in repo.find_all(s, Domain, app_id=app.id):
            s.delete(domain)  # another app may add the hostname at once
        for secret in repo.find_all(
            s,
            Secret,
            Secret.deleted_at.is_(None),  # type: ignore[union-attr]
            app_id=app.id,
        ):
            secret.deleted_at = now
            secret.updated_at = now
        retire(ctx, s, app)
        wake_after_commit(ctx, s, "edge", "rollout")
        s.flush()
        return app
