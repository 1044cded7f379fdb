"""Apps: create, read, update, delete; addressable by name or id within an organization.

Names are unique across the platform, case-insensitively: ``<name>.<base domain>`` is
the app's hostname. Lookups stay scoped: another organization's app is 404.
"""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from shellwego.errors import NotFound
from shellwego.models import App, AppCreate, AppStatus, ProcessFormation, Release, Role, new_id
from shellwego.store import repository as repo

from . import placement
from .context import Context, Principal, wake_after_commit
from .organizations import require_role

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def find(s: Session, org_id: str, ref: str) -> App:
    """An app of this organization by id or (case-insensitive) name; else 404."""
    app = repo.get(s, App, id=ref, organization_id=org_id) if ULID.match(ref) else None
    app = app or repo.get(s, App, name=ref, organization_id=org_id)
    if app is None:
        raise NotFound(f"app {ref!r} not found")
    return app


def taken(name: str) -> str:
    """App names are unique platform-wide (each is a hostname under the base domain);
    the message never says which organization holds the name."""
    return f"app name {name!r} is already taken"


def get(ctx: Context, who: Principal, ref: str) -> App:
    with ctx.db.session() as s:
        return find(s, who.organization_id, ref)


def list_page(
    ctx: Context, who: Principal, cursor: str | None, limit: int, status: str | None = None
) -> repo.Page[App]:
    filters = {"status": status} if status else {}
    with ctx.db.session() as s:
        return repo.page(
            s, App, cursor=cursor, limit=limit, organization_id=who.organization_id, **filters
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
            created_at=now,
            updated_at=now,
        )
        placement.check_constraints(s, app)
        return repo.add(s, app, conflict=taken(body.name))


def update(ctx: Context, who: Principal, ref: str, changes: dict[str, object]) -> App:
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        app = find(s, who.organization_id, ref)
        placement_before = app.placement
        for key, value in changes.items():
            setattr(app, key, value)
        if app.placement.constraints != placement_before.constraints:
            _check_constraints(ctx, s, app)
        app.updated_at = ctx.clock.now()
        # hostnames and the HTTPS redirect are the edge's: it applies them at once
        wake_after_commit(ctx, s, "edge")
        return repo.save(s, app, conflict=taken(str(changes.get("name", app.name))))


def _check_constraints(ctx: Context, s: Session, app: App) -> None:
    """New placement constraints must be satisfiable, and the formation fit under them."""
    placement.check_constraints(s, app)
    if app.current_release_id is not None:
        release = repo.require(s, Release, "release", id=app.current_release_id)
        placement.check_formation(s, app, release, app.formation, app.formation, moved=True)
    # instances on nodes that no longer match move: the rollout controller re-plans them
    wake_after_commit(ctx, s, "rollout")


def delete(ctx: Context, who: Principal, ref: str) -> App:
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        app = find(s, who.organization_id, ref)
        repo.delete(s, app)
        return app
