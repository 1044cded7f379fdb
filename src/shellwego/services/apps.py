"""Apps: create, read, update, delete; addressable by name or id within an organization."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from shellwego.errors import NotFound
from shellwego.models import App, AppCreate, AppStatus, ProcessFormation, Role, new_id
from shellwego.store import repository as repo

from .context import Context, Principal
from .organizations import require_role

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def find(s: Session, org_id: str, ref: str) -> App:
    """An app of this organization by id or (case-insensitive) name; else 404."""
    app = repo.get(s, App, id=ref, organization_id=org_id) if ULID.match(ref) else None
    app = app or repo.get(s, App, name=ref, organization_id=org_id)
    if app is None:
        raise NotFound(f"app {ref!r} not found")
    return app


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
            status=AppStatus.CREATED,
            formation={"web": ProcessFormation(count=1)},
            current_release_id=None,
            created_by=who.user_id,
            created_at=now,
            updated_at=now,
        )
        return repo.add(s, app, conflict=f"an app named {body.name!r} already exists")


def update(ctx: Context, who: Principal, ref: str, changes: dict[str, object]) -> App:
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        app = find(s, who.organization_id, ref)
        for key, value in changes.items():
            setattr(app, key, value)
        app.updated_at = ctx.clock.now()
        return repo.save(s, app, conflict=f"an app named {changes.get('name')!r} already exists")


def delete(ctx: Context, who: Principal, ref: str) -> App:
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        app = find(s, who.organization_id, ref)
        repo.delete(s, app)
        return app
