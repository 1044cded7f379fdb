"""Queries: the only module family that builds SQL.

Generic helpers serve most reads; aggregate-specific queries live beside them in
``queries.py``. Every tenant-owned query takes the organization id, so a caller cannot
forget to scope it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from shellwego.errors import Conflict, NotFound

T = TypeVar("T", bound=SQLModel)

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def get(session: Session, model: type[T], **filters: Any) -> T | None:
    stmt = sa.select(model).filter_by(**filters).limit(1)
    return session.execute(stmt).scalars().first()


def require(session: Session, model: type[T], what: str, **filters: Any) -> T:
    found = get(session, model, **filters)
    if found is None:
        raise NotFound(f"{what} not found")
    return found


def find_all(
    session: Session, model: type[T], *where: Any, order_by: Any = None, **filters: Any
) -> list[T]:
    stmt = sa.select(model).filter_by(**filters)
    for clause in where:
        stmt = stmt.where(clause)
    stmt = stmt.order_by(order_by if order_by is not None else model.id)  # type: ignore[attr-defined]
    return list(session.execute(stmt).scalars())


def page(
    session: Session,
    model: type[T],
    *,
    cursor: str | None,
    limit: int,
    where: Sequence[Any] = (),
    **filters: Any,
) -> Page[T]:
    """Cursor pagination by ULID: items with id greater than ``cursor``, ascending."""
    return _page(session, model, cursor, limit, where, filters, newest_first=False)


def page_newest_first(
    session: Session,
    model: type[T],
    *,
    cursor: str | None,
    limit: int,
    where: Sequence[Any] = (),
    **filters: Any,
) -> Page[T]:
    """Cursor pagination by ULID, descending: items with id less than ``cursor``."""
    return _page(session, model, cursor, limit, where, filters, newest_first=True)


def _page(
    session: Session,
    model: type[T],
    cursor: str | None,
    limit: int,
    where: Sequence[Any],
    filters: dict[str, Any],
    *,
    newest_first: bool,
) -> Page[T]:
    limit = max(1, min(limit, MAX_PAGE))
    id_column = model.id  # type: ignore[attr-defined]
    stmt = sa.select(model).filter_by(**filters)
    for clause in where:
        stmt = stmt.where(clause)
    if cursor:
        stmt = stmt.where(id_column < cursor if newest_first else id_column > cursor)
    order = id_column.desc() if newest_first else id_column
    rows = list(session.execute(stmt.order_by(order).limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=rows[-1].id if more and rows else None)  # type: ignore[attr-defined]


def add(session: Session, entity: T, *, conflict: str) -> T:
    """Insert and flush; a uniqueness violation becomes a clear :class:`Conflict`."""
    try:
        with session.begin_nested():
            session.add(entity)
            session.flush()
    except IntegrityError:
        raise Conflict(conflict) from None
    return entity


def save(session: Session, entity: T, *, conflict: str) -> T:
    return add(session, entity, conflict=conflict)


def delete(session: Session, entity: SQLModel) -> None:
    session.delete(entity)
    session.flush()


def touch_if_older(
    session: Session, model: type[SQLModel], id: str, column: str, now: Any, older_than: Any
) -> None:
    """Set ``column`` of row ``id`` to ``now`` unless it was set after ``older_than``
    (one UPDATE, so concurrent requests agree without reading first)."""
    col = getattr(model, column)
    session.execute(
        sa.update(model)
        .where(model.id == id, sa.or_(col.is_(None), col < older_than))  # type: ignore[attr-defined]
        .values({column: now})
    )


def count(session: Session, model: type[SQLModel], *where: Any, **filters: Any) -> int:
    stmt = sa.select(sa.func.count()).select_from(model).filter_by(**filters)
    for clause in where:
        stmt = stmt.where(clause)
    return int(session.execute(stmt).scalar_one())


def lock_all(session: Session, model: type[T]) -> list[T]:
    """Every row of ``model`` FOR UPDATE (PostgreSQL), in id order, in one query."""
    id_column = model.id  # type: ignore[attr-defined]
    stmt = sa.select(model).order_by(id_column)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return list(session.execute(stmt).scalars())


def lock_batch(session: Session, model: type[T], *where: Any, limit: int) -> list[T]:
    """Up to ``limit`` rows matching ``where``, in id order, FOR UPDATE (PostgreSQL)."""
    id_column = model.id  # type: ignore[attr-defined]
    stmt = sa.select(model)
    for clause in where:
        stmt = stmt.where(clause)
    stmt = stmt.order_by(id_column).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return list(session.execute(stmt).scalars())


def hold_writes(session: Session, model: type[SQLModel]) -> None:
    """Block other writers of ``model``'s table until this transaction ends.

    PostgreSQL takes a SHARE lock (waits for writers in flight, then keeps new ones out);
    SQLite's write transaction (``BEGIN IMMEDIATE``) already excludes every other writer.
    """
    if session.get_bind().dialect.name == "postgresql":
        table = model.__table__.name  # type: ignore[attr-defined]
        session.execute(sa.text(f'LOCK TABLE "{table}" IN SHARE MODE'))


def one_writer(session: Session, model: type[SQLModel]) -> None:
    """Let one transaction at a time write ``model``'s table (others wait until it ends):
    for a writer that reads what it writes next, e.g. the next free number.

    PostgreSQL takes a SHARE ROW EXCLUSIVE lock (it conflicts with itself and with every
    writer); SQLite's write transaction already excludes every other writer.
    """
    if session.get_bind().dialect.name == "postgresql":
        table = model.__table__.name  # type: ignore[attr-defined]
        session.execute(sa.text(f'LOCK TABLE "{table}" IN SHARE ROW EXCLUSIVE MODE'))


def count_by(session: Session, model: type[SQLModel], column: str) -> dict[Any, int]:
    """How many rows hold each value of ``column``."""
    col = getattr(model, column)
    stmt = sa.select(col, sa.func.count()).select_from(model).group_by(col)
    return {value: int(n) for value, n in session.execute(stmt).all()}


def max_of(
    session: Session, model: type[SQLModel], column: str, *where: Any, **filters: Any
) -> Any:
    stmt = sa.select(sa.func.max(getattr(model, column))).filter_by(**filters)
    for clause in where:
        stmt = stmt.where(clause)
    return session.execute(stmt).scalar_one()


def keep_newest(session: Session, model: type[SQLModel], keep: int, **filters: Any) -> None:
    """Delete all but the ``keep`` newest rows (by ULID) matching ``filters``."""
    id_column = model.id  # type: ignore[attr-defined]
    cutoff = session.execute(
        sa.select(id_column).filter_by(**filters).order_by(id_column.desc()).offset(keep).limit(1)
    ).scalar_one_or_none()
    if cutoff is not None:
        session.execute(sa.delete(model).filter_by(**filters).where(id_column <= cutoff))


def newest(session: Session, model: type[T], count: int, **filters: Any) -> list[T]:
    """The ``count`` newest rows (by ULID), oldest first."""
    if count <= 0:
        return []
    id_column = model.id  # type: ignore[attr-defined]
    stmt = sa.select(model).filter_by(**filters).order_by(id_column.desc()).limit(count)
    return list(reversed(list(session.execute(stmt).scalars())))
