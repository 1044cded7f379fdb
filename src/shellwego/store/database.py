"""The one database service: engine, sessions, migrations, reset.

``DATABASE_URL`` picks the backend: ``sqlite:///path`` (the embedded default) or
``postgresql://…`` (served through psycopg 3). The same entities, repositories and
migrations run on both.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlmodel import SQLModel

from shellwego import models as _models  # noqa: F401  (registers every table)
from shellwego.errors import ConfigError, DatabaseBusy, InvalidInput, Unavailable
from shellwego.files import PRIVATE_FILE, make_private_dir

MIGRATIONS = Path(__file__).with_name("migrations")
NUMBER_OUT_OF_RANGE = "22003"  # SQLSTATE numeric_value_out_of_range
_memory_lock = threading.Lock()
T = TypeVar("T")
# an execution option: sessions of this engine only read (SQLite: a deferred BEGIN)
READ_ONLY = "shellwego_read_only"
# what SQLite creates beside the database file; it holds the same data
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
# PostgreSQL: serialization failure, deadlock, lock not available
_PG_BUSY = frozenset({"40001", "40P01", "55P03"})


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and route them to psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if not (url.startswith("sqlite") or url.startswith("postgresql+psycopg://")):
        raise ConfigError(
            f"unsupported DATABASE_URL scheme in {url.split(':', 1)[0]!r}: "
            "use sqlite:///path or postgresql://…"
        )
    return url


# how long a SQLite writer waits for the write lock before giving up (busy)
SQLITE_BUSY_TIMEOUT = 10.0


def _sqlite_pragmas(busy_timeout: float) -> Callable[[Any, Any], None]:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return apply


def is_busy(exc: BaseException) -> bool:
    """Whether a database error means "locked or busy, try again", by its error code."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.Error):
        return (getattr(orig, "sqlite_errorcode", 0) & 0xFF) in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
        )
    return getattr(orig, "sqlstate", None) in _PG_BUSY


def private_sqlite_file(path: Path) -> None:
    """Create the database file readable by its owner only, and take group and other
    access away from an existing one and its WAL, shared-memory and journal files (an
    older install made them 0644). SQLite gives the files it creates beside the
    database the database file's mode."""
    if not path.parent.is_dir():
        make_private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        os.close(os.open(path, flags, PRIVATE_FILE))
    for file in (path, *(path.with_name(path.name + s) for s in SQLITE_COMPANIONS)):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            mode = file.stat().st_mode & 0o7777
            if mode & 0o077:
                file.chmod(mode & 0o700)


def make_engine(url: str, *, lock_timeout: float | None = None) -> Engine:
    """The engine of ``url``. ``lock_timeout`` (seconds): how long a statement waits for
    a lock before the database answers busy (SQLite: 10 s unless given; PostgreSQL: its
    own setting, no limit by default, unless given)."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            private_sqlite_file(Path(path))
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=10
        )
        event.listen(engine, "connect", _sqlite_pragmas(lock_timeout or SQLITE_BUSY_TIMEOUT))

        # SQLite's own BEGIN is deferred; a write session takes the write lock up front so
        # concurrent writers queue on busy_timeout instead of failing on lock upgrade. A
        # read session stays deferred: in WAL mode it reads a snapshot and never waits
        # for a writer, nor makes one wait.
        @event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        return engine
    connect_args = {}
    if lock_timeout is not None:
        connect_args["options"] = f"-c lock_timeout={int(lock_timeout * 1000)}"
    return sa.create_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args
    )


class Database:
    """Owns the engine and the schema lifecycle: ``migrate()``, ``session()``, ``reset()``."""

    def __init__(self, url: str, *, lock_timeout: float | None = None) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(url, lock_timeout=lock_timeout)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        event.listen(self._readers, "before_flush", _refuse_writes)
        # checked by every write session before it commits (see ``guarded``)
        self._guard: Callable[[Session], None] | None = None

    def guarded(self, guard: Callable[[Session], None]) -> Database:
        """This database (same engine and pool), with ``guard(session)`` run by every
        write session just before it commits: raising refuses the commit and rolls the
        whole transaction back. The fencing of a lease holder's writes
        (``services/leases.py``)."""
        view = copy.copy(self)
        view._guard = guard
        return view

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        config.attributes["engine"] = self.engine
        return config

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent).

        Replicas starting together take turns: the first upgrades, the others then find
        the schema current and do nothing.
        """
        with self.exclusive("migrate"), reachable(self.url):
            command.upgrade(self.alembic_config(), "head")

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with reachable(self.url), self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a lock named ``name`` across every process using this database.

        PostgreSQL: a session advisory lock (released by the server if this process
        dies). SQLite: an ``flock`` on a file beside the database.
        """
        if self.backend == "postgresql":
            digest = hashlib.sha256(f"shellwego:{name}".encode()).digest()
            key = int.from_bytes(digest[:8], "big", signed=True)  # a bigint
            with reachable(self.url):
                conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            finally:
                conn.close()
            return
        path = sa.engine.make_url(self.url).database
        if not path or path == ":memory:":
            with _memory_lock:
                yield
            return
        fd = os.open(f"{path}.{name}.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
        with os.fdopen(fd, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on error.

        ``write=False``: a read-only one (reads that must not wait for writers, nor make
        them wait: authentication, GETs); flushing a change from it is refused. A database
        that stays locked or busy raises :class:`DatabaseBusy` (503, Retry-After), never
        the driver's error.

        What no column can hold is invalid input, and the work is rolled back: a number
        past its column (SQLite refuses Python ints past 64 bits, PostgreSQL values past
        the column's width), the guard behind the bounds the entities declare; and text
        with a NUL character, which PostgreSQL cannot store.
        """
        factory = self._sessions if write else self._readers
        try:
            with factory() as session, session.begin():
                if write and self._guard is not None:
                    event.listen(session, "before_commit", self._guard)
                yield session
        except OverflowError:
            raise InvalidInput("a number in the request is out of range") from None
        except sa.exc.DataError as exc:
            if getattr(exc.orig, "sqlstate", None) == NUMBER_OUT_OF_RANGE:
                raise InvalidInput("a number in the request is out of range") from None
            if _holds_nul(exc.params):
                raise InvalidInput("text in the request contains a NUL character") from None
            raise
        except sa.exc.DBAPIError as exc:
            if not is_busy(exc):
                raise
            busy = "the database is busy; try again in a moment"
            raise DatabaseBusy(busy, retry_after=1) from exc

    def retrying(self, action: Callable[[], T], *, attempts: int = 4) -> T:
        """``action()`` (a unit of work of its own, whole: it opens its session), run
        again when the database answered a transient conflict (deadlock, serialization
        failure, lock timeout, SQLite busy), after a short random pause so that the
        transactions that met do not meet again; :class:`DatabaseBusy` (503,
        Retry-After) once ``attempts`` have all failed."""
        for attempt in range(1, attempts + 1):
            try:
                return action()
            except DatabaseBusy:
                if attempt == attempts:
                    raise
                time.sleep(random.uniform(0.5, 1.5) * 0.02 * 2**attempt)
        raise AssertionError("unreachable")

    def reset(self) -> None:
        """Delete every row of every table (tests)."""
        with self.engine.begin() as conn:
            for table in reversed(SQLModel.metadata.sorted_tables):
                conn.execute(table.delete())

    def dispose(self) -> None:
        self.engine.dispose()


def _refuse_writes(session: Session, _context: Any, _instances: Any) -> None:
    raise RuntimeError("a read-only session cannot write: use db.session() for changes")


def _holds_nul(params: Any) -> bool:
    """Whether a statement's parameters hold text with a NUL character."""
    if isinstance(params, str):
        return "\x00" in params
    if isinstance(params, Mapping):
        return any(_holds_nul(value) for value in params.values())
    if isinstance(params, list | tuple):
        return any(_holds_nul(value) for value in params)
    return False


@contextmanager
def reachable(url: str) -> Iterator[None]:
    """Turn a failure to reach the database into one readable :class:`Unavailable`."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        where = sa.engine.make_url(url).render_as_string(hide_password=True)
        where = where.replace("postgresql+psycopg://", "postgresql://", 1)
        reason = (str(exc.orig or exc).strip().splitlines() or ["unknown error"])[0]
        raise Unavailable(f"cannot use the database at {where}: {reason}") from None


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` once the session's transaction has committed (e.g. wake waiters)."""

    def _fire(_session: Session) -> None:
        action()

    event.listen(session, "after_commit", _fire, once=True)
