"""Queries of the login limits: count a failure atomically, read the blocks, forget."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shellwego.models import LoginThrottle, ThrottleScope, new_id

Key = tuple[ThrottleScope, str]

_table = LoginThrottle.__table__  # type: ignore[attr-defined]


def count_failure(session: Session, key: Key, now: datetime, forget_before: datetime) -> int:
    """Add one failure to ``key`` (one upsert, safe against concurrent ones on every
    replica); a count whose last failure is older than ``forget_before`` starts over.
    Returns the count including this failure."""
    scope, subject = key
    insert = (
        postgresql.insert(_table)
        if session.get_bind().dialect.name == "postgresql"
        else sqlite.insert(_table)
    )
    current = _table.c.failures
    stmt = (
        insert.values(
            id=new_id(),
            scope=scope,
            subject=subject,
            failures=1,
            last_failure_at=now,
            blocked_until=None,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_update(
            index_elements=[_table.c.scope, _table.c.subject],
            set_={
                "failures": sa.case(
                    (_table.c.last_failure_at < forget_before, 1), else_=current + 1
                ),
                "last_failure_at": now,
                "updated_at": now,
            },
        )
        .returning(_table.c.failures)
    )
    return int(session.execute(stmt).scalar_one())


def block(session: Session, key: Key, until: datetime) -> None:
    scope, subject = key
    session.execute(
        sa.update(_table)
        .where(_table.c.scope == scope, _table.c.subject == subject)
        .values(blocked_until=until)
    )


def blocked_until(session: Session, keys: Iterable[Key], now: datetime) -> dict[Key, datetime]:
    """The keys among ``keys`` that must still wait, and until when."""
    wanted = list(keys)
    if not wanted:
        return {}
    stmt = sa.select(_table.c.scope, _table.c.subject, _table.c.blocked_until).where(
        sa.tuple_(_table.c.scope, _table.c.subject).in_(wanted),
        _table.c.blocked_until > now,
    )
    return {
        (ThrottleScope(scope), subject): until for scope, subject, until in session.execute(stmt)
    }


def clear(session: Session, key: Key) -> None:
    scope, subject = key
    session.execute(sa.delete(_table).where(_table.c.scope == scope, _table.c.subject == subject))


def forget(session: Session, last_failure_before: datetime, now: datetime) -> int:
    """Delete the counts nothing failed in since ``last_failure_before`` and that block
    nothing any more; how many went."""
    stmt = sa.delete(_table).where(
        _table.c.last_failure_at < last_failure_before,
        sa.or_(_table.c.blocked_until.is_(None), _table.c.blocked_until <= now),
    )
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]
