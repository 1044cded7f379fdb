"""Times come from the injected clock; passwords are stored as argon2id hashes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from fastapi.testclient import TestClient
from sqlmodel import SQLModel

from shellwego.api import create_app
from shellwego.clock import FrozenClock
from shellwego.models import App, AuditLog
from shellwego.services.context import Context
from shellwego.store import repository as repo

FROZEN = datetime(2026, 4, 1, 9, 30, 0, 250000, tzinfo=UTC)
LATER = datetime(2026, 4, 1, 9, 31, 0, 250000, tzinfo=UTC)
PASSWORD = "correct horse battery staple"


@pytest.fixture
def frozen(ctx: Context) -> Iterator[tuple[TestClient, FrozenClock]]:
    clock = FrozenClock(FROZEN)
    ctx.clock = clock
    with TestClient(create_app(ctx), raise_server_exceptions=False) as c:
        yield c, clock


def _owner(c: TestClient) -> dict[str, str]:
    r = c.post("/v1/bootstrap", json={
        "user": {"email": "owner@t.example", "password": PASSWORD, "name": "Owner"},
        "organization": {"name": "T", "slug": "t"}})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']['token']}"}


def _times(ctx: Context) -> dict[str, set[datetime]]:
    """Every created_at/updated_at of every non-empty table."""
    found: dict[str, set[datetime]] = {}
    with ctx.db.session() as s:
        for table in SQLModel.metadata.sorted_tables:
            cols = [c for c in ("created_at", "updated_at") if c in table.c]
            for col in cols:
                values = set(s.execute(sa.select(table.c[col])).scalars())
                if values:
                    found[f"{table.name}.{col}"] = values
    return found


def test_timestamps_come_from_the_injected_clock(
    frozen: tuple[TestClient, FrozenClock], ctx: Context
) -> None:
    c, clock = frozen
    h = _owner(c)
    app = c.post("/v1/apps", headers=h, json={"name": "blog"}).json()
    assert app["created_at"] == app["updated_at"] == "2026-04-01T09:30:00.250000Z"
    assert c.patch("/v1/apps/blog/config", headers=h, json={"A": "1"}).status_code == 200
    assert c.post("/v1/secrets", headers=h, json={"name": "S", "value": "v"}).status_code == 201
    r = c.post("/v1/domains", headers=h, json={"hostname": "www.example.com", "app": "blog"})
    assert r.status_code == 201, r.text
    times = _times(ctx)
    for table in ("organizations", "users", "memberships", "api_tokens", "apps", "secrets",
                  "secret_versions", "domains", "audit_logs"):
        assert times[f"{table}.created_at"] == {FROZEN}, table
    assert set().union(*times.values()) == {FROZEN}

    clock.advance(60)
    r = c.patch("/v1/apps/blog", headers=h, json={"redirect_https": True})
    assert r.status_code == 200, r.text
    assert (r.json()["created_at"], r.json()["updated_at"]) == (
        "2026-04-01T09:30:00.250000Z", "2026-04-01T09:31:00.250000Z")
    with ctx.db.session() as s:
        row = repo.require(s, App, "app", name="blog")
        assert (row.created_at, row.updated_at) == (FROZEN, LATER)
        audit = repo.find_all(s, AuditLog)
    assert [a.created_at for a in audit][-1] == LATER  # the PATCH, audited at the new time
    assert {a.created_at for a in audit[:-1]} == {FROZEN}


def test_passwords_are_stored_as_argon2id(client: TestClient, ctx: Context) -> None:
    _owner(client)
    with ctx.db.session() as s:
        stored = s.execute(sa.text("select password_hash from users")).scalar_one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)
    with pytest.raises(VerifyMismatchError):
        PasswordHasher().verify(stored, PASSWORD + "!")
    r = client.post("/v1/auth/token", json={"email": "owner@t.example", "password": PASSWORD})
    assert r.status_code == 201, r.text
