"""App, build and release-phase logs: reading them, and keeping the platform's own."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from shellwego.models import LogLine, new_id
from shellwego.store import repository as repo

from . import apps as app_service
from .context import Context, Principal, wake_after_commit


def add_lines(
    ctx: Context,
    s: Session,
    app_id: str,
    source: str,
    lines: Sequence[str],
    instance_id: str | None = None,
) -> None:
    """Keep ``lines`` the platform ran for the app (a build's, a release command's) in the
    caller's transaction, beside its instances' logs; followers are woken after commit."""
    if not lines:
        return
    now = ctx.clock.now()
    for text in lines:
        s.add(
            LogLine(
                id=new_id(),
                app_id=app_id,
                instance_id=instance_id,
                source=source,
                stream="stdout",
                timestamp=now,
                line=text,
            )
        )
    s.flush()
    repo.keep_newest(s, LogLine, ctx.settings.log_retention_lines, app_id=app_id)
    wake_after_commit(ctx, s, f"logs:{app_id}")


def app_id_of(ctx: Context, who: Principal, app_ref: str) -> str:
    return app_service.get(ctx, who, app_ref).id


def _filters(process: str | None) -> dict[str, str]:
    return {"source": process} if process else {}


def tail(ctx: Context, app_id: str, count: int, process: str | None) -> list[LogLine]:
    with ctx.db.session() as s:
        return repo.newest(s, LogLine, count, app_id=app_id, **_filters(process))


def after(ctx: Context, app_id: str, cursor: str | None, process: str | None) -> list[LogLine]:
    with ctx.db.session() as s:
        return repo.page(
            s, LogLine, cursor=cursor, limit=500, app_id=app_id, **_filters(process)
        ).items


def newest_id(ctx: Context, app_id: str) -> str | None:
    with ctx.db.session() as s:
        rows = repo.newest(s, LogLine, 1, app_id=app_id)
        return rows[-1].id if rows else None
