"""Locks held across every control-plane replica using one database, for work that must
not run twice at once anywhere in the cluster (an app's build, a push to its repository).

PostgreSQL: a session advisory lock on a connection of its own, tried and retried, so a
waiter holds no thread; the server releases it if the holder dies. SQLite (one machine):
an ``flock`` on a file beside the database. Either way waiters in one process queue on an
``asyncio.Lock`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import sqlalchemy as sa

from shellwego.files import PRIVATE_FILE, make_private_dir

from .database import Database, reachable

_local: weakref.WeakKeyDictionary[Database, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


def lock_key(name: str) -> int:
    """The advisory-lock key (a bigint) of ``name``."""
    digest = hashlib.sha256(f"shellwego:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _in_process(db: Database, name: str) -> asyncio.Lock:
    locks = _local.setdefault(db, {})
    for other in [k for k, lock in locks.items() if k != name and not lock.locked()]:
        del locks[other]  # nobody holds or waits for it
    return locks.setdefault(name, asyncio.Lock())


def _pg_connect(db: Database) -> sa.Connection:
    with reachable(db.url):
        return db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def _pg_try(db: Database, conn: sa.Connection, key: int) -> bool:
    with reachable(db.url):
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
        return bool(got.scalar())


def _pg_release(conn: sa.Connection, key: int) -> None:
    try:
        conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    except sa.exc.DBAPIError:
        conn.invalidate()  # never back to the pool holding the lock: the server drops it
    finally:
        conn.close()


def _file_of(db: Database, name: str) -> Path | None:
    path = sa.engine.make_url(db.url).database
    if not path or path == ":memory:":
        return None
    folder = Path(f"{path}.locks")
    make_private_dir(folder)
    return folder / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.lock"


def _flock_try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.asynccontextmanager
async def cluster_lock(
    db: Database, name: str, *, poll: float = 0.05, max_poll: float = 0.5
) -> AsyncIterator[None]:
    """Hold the lock ``name`` across every process using ``db`` while the block runs."""
    async with _in_process(db, name):
        delay = poll
        if db.backend == "postgresql":
            key = lock_key(name)
            conn = await asyncio.to_thread(_pg_connect, db)
            try:
                while not await asyncio.to_thread(_pg_try, db, conn, key):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, max_poll)
            except BaseException:
                await asyncio.to_thread(_pg_release, conn, key)
                raise
            try:
                yield
            finally:
                await asyncio.to_thread(_pg_release, conn, key)
            return
        path = _file_of(db, name)
        if path is None:
            yield
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, PRIVATE_FILE)
        try:
            while not _flock_try(fd):
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_poll)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
