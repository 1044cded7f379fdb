"""A database that stays locked never shows a client "database is locked": writes get a
503 problem with Retry-After, and reads do not wait for the writer at all (both
backends; a short lock timeout stands in for a long-held lock)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from shellwego.api import create_app
from shellwego.services.context import Context
from shellwego.store import Database

from .conftest import bootstrap


@pytest.fixture
def impatient(ctx: Context) -> Iterator[TestClient]:
    """The API on a database whose statements give up on a lock after 0.2 s."""
    patient = ctx.db
    ctx.db = Database(patient.url, lock_timeout=0.2)
    try:
        with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
            yield client
    finally:
        ctx.db.dispose()
        ctx.db = patient


@pytest.fixture
def writer_holding_the_lock(ctx: Context) -> Iterator[None]:
    """Another connection in the middle of a write: SQLite's write lock; on PostgreSQL a
    lock on ``apps`` that keeps writers out and lets readers in."""
    conn = ctx.db.engine.connect()
    try:
        if ctx.db.backend == "sqlite":
            conn.exec_driver_sql("COMMIT")  # leave SQLAlchemy's implicit transaction
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(sa.text("LOCK TABLE apps IN EXCLUSIVE MODE"))
        yield
    finally:
        conn.rollback()
        conn.close()


def test_a_locked_database_answers_503_with_retry_after_and_reads_go_on(
    impatient: TestClient, ctx: Context, request: pytest.FixtureRequest
) -> None:
    h = bootstrap(impatient)
    assert impatient.post("/v1/apps", headers=h, json={"name": "before"}).status_code == 201
    request.getfixturevalue("writer_holding_the_lock")

    r = impatient.post("/v1/apps", headers=h, json={"name": "during"})
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["type"].endswith("/database-busy")
    assert "locked" not in r.text.lower()

    r = impatient.get("/v1/apps", headers=h)
    assert r.status_code == 200, r.text
    assert [a["name"] for a in r.json()["items"]] == ["before"]
