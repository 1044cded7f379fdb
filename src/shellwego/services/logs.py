"""Reading app and build logs."""

from __future__ import annotations

from shellwego.models import LogLine
from shellwego.store import repository as repo

from . import apps as app_service
from .context import Context, Principal


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
