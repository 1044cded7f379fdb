"""The one database service: engine, sessions, migrations, reset.

``DATABASE_URL`` picks the backend: ``sqlite:///path`` (the embedded default) or
``postgresql://…`` (served through psycopg 3). The same entities, repositories and
migrations run on both.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlmodel import SQLModel

from shellwego import models as _models  # noqa: F401  (registers every table)
from shellwego.errors import ConfigError, InvalidInput, Unavailable

MIGRATIONS = Path(__file__).with_name("migrations")
NUMBER_OUT_OF_RANGE = "22003"  # SQLSTATE numeric_value_out_of_range
_memory_lock = threading.Lock()


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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=10
        )
        event.listen(engine, "connect", _sqlite_pragmas)

        # SQLite's own BEGIN is deferred; take the write lock up front so concurrent
        # writers queue on busy_timeout instead of failing on lock upgrade.
        @event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        return engine
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class Database:
    """Owns the engine and the schema lifecycle: ``migrate()``, ``session()``, ``reset()``."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

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
        with open(f"{path}.{name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on error.

        What no column can hold is invalid input, and the work is rolled back: a number
        past its column (SQLite refuses Python ints past 64 bits, PostgreSQL values past
        the column's width), the guard behind the bounds the entities declare; and text
        with a NUL character, which PostgreSQL cannot store."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except OverflowError:
            raise InvalidInput("a number in the request is out of range") from None
        except sa.exc.DataError as exc:
            if getattr(exc.orig, "sqlstate", None) == NUMBER_OUT_OF_RANGE:
                raise InvalidInput("a number in the request is out of range") from None
            if _holds_nul(exc.params):
                raise InvalidInput("text in the request contains a NUL character") from None
            raise

    def reset(self) -> None:
        """Delete every row of every table (tests)."""
        with self.engine.begin() as conn:
            for table in reversed(SQLModel.metadata.sorted_tables):
                conn.execute(table.delete())

    def dispose(self) -> None:
        self.engine.dispose()


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
