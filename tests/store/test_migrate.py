"""Schema upgrades: ``shellwego db upgrade`` as a real command, and replicas racing on start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from conftest import PG_ADMIN_URL, _pg_server_url
from shellwego.models import Organization, new_id
from shellwego.store import Database

SHELLWEGO = str(Path(sys.executable).with_name("shellwego"))
TABLES = set(SQLModel.metadata.tables)


def _head() -> str:
    """The newest revision of the migrations."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(Database("sqlite://").alembic_config()).get_current_head()
    assert head is not None
    return head


HEAD = _head()


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database: a new SQLite file or a new PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"shellwego_fresh_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_server_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _upgrade(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELLWEGO_")}
    env.update(DATABASE_URL=url, SHELLWEGO_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run(
        [SHELLWEGO, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
    )


def _check_schema(url: str) -> None:
    db = Database(url)
    try:
        assert set(sa.inspect(db.engine).get_table_names()) == TABLES | {"alembic_version"}
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []
        assert db.current_revision() == HEAD
    finally:
        db.dispose()


def test_db_upgrade_creates_the_schema_and_a_second_run_changes_nothing(
    fresh_url: str, backend: str, tmp_path: Path
) -> None:
    first = _upgrade(fresh_url, tmp_path)
    assert (first.returncode, first.stderr) == (0, "")
    name = "sqlite" if backend == "sqlite" else "postgresql"
    assert first.stdout == f"database at revision {HEAD} ({name})\n"
    _check_schema(fresh_url)

    db = Database(fresh_url)
    try:
        now = datetime.now(UTC)
        with db.session() as s:
            s.add(Organization(id=new_id(), name="Kept", slug="kept", created_at=now,
                               updated_at=now))
        second = _upgrade(fresh_url, tmp_path)
        assert (second.returncode, second.stdout, second.stderr) == (0, first.stdout, "")
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("select name from organizations")).scalars().all() == [
                "Kept"]
    finally:
        db.dispose()
    _check_schema(fresh_url)


@pytest.mark.parametrize("url", [
    "postgresql://postgres:hunter2@127.0.0.1:1/shellwego",
    "mysql://root@127.0.0.1/shellwego",
    "not a url",
])
def test_db_upgrade_with_a_bad_database_url_says_so_in_one_line(url: str, tmp_path: Path) -> None:
    out = _upgrade(url, tmp_path)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith("Error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr and "hunter2" not in out.stderr
    if url.startswith("postgresql"):
        assert out.stderr.startswith(
            "Error: cannot use the database at postgresql://postgres:***@127.0.0.1:1/shellwego: ")


REPLICA = """
import sys, time
from shellwego.models import Organization, new_id
from shellwego.store import Database
db = Database(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
db.migrate()
print(db.current_revision())
"""


def test_replicas_migrating_at_once_both_succeed(fresh_url: str) -> None:
    """Two `shellwego server` replicas migrate on start against the same empty database."""
    start = f"{time.time() + 3:.3f}"
    replicas = [
        subprocess.Popen([sys.executable, "-c", REPLICA, fresh_url, start],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [r.communicate(timeout=120) for r in replicas]
    for replica, (out, err) in zip(replicas, results, strict=True):
        assert (replica.returncode, out, err) == (0, f"{HEAD}\n", "")
    _check_schema(fresh_url)


def test_apps_made_before_uids_existed_each_get_their_own(fresh_url: str) -> None:
    """Upgrading hands every app that existed before a uid of its own, in creation order,
    leased for good."""
    from alembic import command

    db = Database(fresh_url)
    try:
        command.upgrade(db.alembic_config(), "0001")
        now = datetime.now(UTC)
        org = new_id()
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO organizations (id, created_at, updated_at, name, slug, plan, "
                    "settings) VALUES (:id, :at, :at, 'Acme', 'acme', 'free', '{}')"
                ),
                {"id": org, "at": now},
            )
            for name in ("first", "second"):
                conn.execute(
                    sa.text(
                        "INSERT INTO apps (id, created_at, updated_at, name, health_check, "
                        "redirect_https, runtime, deploy, placement, organization_id, status, "
                        "formation) VALUES (:id, :at, :at, :name, '{}', false, 'process', "
                        "'{}', '{}', :org, 'created', '{}')"
                    ),
                    {"id": new_id(), "at": now, "name": name, "org": org},
                )
                time.sleep(0.002)  # distinct ULIDs and creation times, in this order
        db.migrate()
        with db.engine.connect() as conn:
            uids = conn.execute(sa.text("SELECT name, uid FROM apps ORDER BY uid")).all()
            leases = conn.execute(sa.text("SELECT uid FROM uid_leases ORDER BY uid")).all()
        assert [tuple(r) for r in uids] == [("first", 1000000), ("second", 1000001)]
        assert [r[0] for r in leases] == [1000000, 1000001]
    finally:
        db.dispose()
