"""Releases: immutable, numbered v1, v2… per app. Config changes and rollbacks make new ones."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from shellwego.errors import Conflict, InvalidInput, NotFound
from shellwego.models import App, ProcessFormation, Release, Role, new_id
from shellwego.models.values import RELEASE_PROCESS
from shellwego.store import repository as repo

from . import apps as app_service
from . import secrets
from .context import Context, Principal
from .organizations import require_role


@dataclass(frozen=True, slots=True)
class Artifact:
    """What a build produced: a slug, or (an image deploy) an image reference."""

    slug_digest: str | None
    stack: str
    process_types: dict[str, str]
    slug_env: dict[str, str]
    image: str | None = None


def next_version(s: Session, app_id: str) -> int:
    return int(repo.max_of(s, Release, "version", app_id=app_id) or 0) + 1


def create(
    ctx: Context,
    s: Session,
    who: Principal | None,
    app: App,
    *,
    artifact: Artifact | None = None,
    copy_of: Release | None = None,
    description: str,
) -> Release:
    """A new release in the caller's transaction: from a build, or copying another release.

    The config is always the app's config (and secrets) at this moment: a rollback first
    makes the app's config the copied release's (see :func:`rollback`).
    """
    base = copy_of
    if base is None and app.current_release_id:
        base = repo.get(s, Release, id=app.current_release_id)
    if artifact is None and base is None:
        raise InvalidInput(f"app {app.name} has no release yet: deploy it first")
    now = ctx.clock.now()
    config = secrets.app_env_refs(s, app)
    release = Release(
        id=new_id(),
        app_id=app.id,
        organization_id=app.organization_id,
        version=next_version(s, app.id),
        slug_digest=artifact.slug_digest if artifact else base.slug_digest,  # type: ignore[union-attr]
        image=artifact.image if artifact else base.image,  # type: ignore[union-attr]
        stack=artifact.stack if artifact else base.stack,  # type: ignore[union-attr]
        process_types=dict(artifact.process_types if artifact else base.process_types),  # type: ignore[union-attr]
        slug_env=dict(artifact.slug_env if artifact else base.slug_env),  # type: ignore[union-attr]
        config=config,
        health_check=copy_of.health_check if copy_of is not None else app.health_check,
        description=description,
        created_by=who.user_id if who else None,
        created_at=now,
        updated_at=now,
    )
    repo.add(s, release, conflict="a release with this version was just created; retry")
    # new process types join the formation with one web / zero others by default; the
    # release command is not a process type that runs (it runs once per release)
    formation = dict(app.formation)
    changed = False
    for ptype in release.process_types:
        if ptype not in formation and ptype != RELEASE_PROCESS:
            formation[ptype] = ProcessFormation(count=1 if ptype == "web" else 0)
            changed = True
    if changed:
        app.formation = formation
    return release


def list_page(
    ctx: Context, who: Principal, app_ref: str, cursor: str | None, limit: int
) -> repo.Page[Release]:
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        return repo.page(s, Release, cursor=cursor, limit=limit, app_id=app.id)


def get(ctx: Context, who: Principal, app_ref: str, version: int) -> Release:
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        release = repo.get(s, Release, app_id=app.id, version=version)
        if release is None:
            raise NotFound(f"release v{version} of {app.name} not found")
        return release


def current(s: Session, app: App) -> Release:
    """The release the app runs; an app with none yet cannot do what needs one."""
    if app.current_release_id is None:
        raise Conflict(f"app {app.name} has nothing deployed yet")
    return repo.require(s, Release, "release", id=app.current_release_id)


def rollback(ctx: Context, s: Session, who: Principal, app: App, version: int) -> Release:
    """A new release copying vN's code and config vars (Heroku's rollback).

    The app's config becomes vN's first, so ``config`` shows what runs and the next
    release (a config change, a deploy) keeps it. Secrets keep their current versions.
    """
    require_role(who, Role.MEMBER)
    target = repo.get(s, Release, app_id=app.id, version=version)
    if target is None:
        raise NotFound(f"release v{version} of {app.name} not found")
    secrets.restore_config(ctx, s, who, app, target.config)
    return create(ctx, s, who, app, copy_of=target, description=f"Rollback to v{version}")
