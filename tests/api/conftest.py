"""An in-process API with two organizations and users of every role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient

from shellwego.api import create_app
from shellwego.services.context import Context

PASSWORD = "correct horse battery staple"


@dataclass
class Org:
    slug: str
    id: str
    tokens: dict[str, str] = field(default_factory=dict)  # role → bearer

    def h(self, role: str = "owner") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), raise_server_exceptions=False) as c:
        yield c


def _login(client: TestClient, email: str, org: str) -> str:
    r = client.post(
        "/v1/auth/token", json={"email": email, "password": PASSWORD, "organization": org}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.fixture
def org_a(client: TestClient) -> Org:
    r = client.post(
        "/v1/bootstrap",
        json={
            "user": {"email": "owner@a.example", "password": PASSWORD, "name": "Owner A"},
            "organization": {"name": "Org A", "slug": "org-a"},
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    org = Org(slug="org-a", id=body["organization"]["id"])
    org.tokens["owner"] = body["token"]["token"]
    for role in ("admin", "member", "viewer"):
        r = client.post(
            "/v1/organizations/org-a/members",
            headers=org.h(),
            json={"email": f"{role}@a.example", "role": role, "password": PASSWORD},
        )
        assert r.status_code == 201, r.text
        org.tokens[role] = _login(client, f"{role}@a.example", "org-a")
    return org


@pytest.fixture
def org_b(client: TestClient, org_a: Org) -> Org:
    """A second organization, owned by a user who is not in org A."""
    r = client.post(
        "/v1/organizations/org-a/members",
        headers=org_a.h(),
        json={"email": "owner@b.example", "role": "viewer", "password": PASSWORD},
    )
    assert r.status_code == 201
    token_in_a = _login(client, "owner@b.example", "org-a")
    r = client.post(
        "/v1/organizations",
        headers={"Authorization": f"Bearer {token_in_a}"},
        json={"name": "Org B", "slug": "org-b"},
    )
    assert r.status_code == 201, r.text
    org = Org(slug="org-b", id=r.json()["id"])
    org.tokens["owner"] = _login(client, "owner@b.example", "org-b")
    # the B owner leaves A, so A and B share nobody
    r = client.delete("/v1/organizations/org-a/members/owner@b.example", headers=org_a.h())
    assert r.status_code == 204, r.text
    return org


def row_counts(ctx: Context, *, skip: tuple[str, ...] = ("audit_logs",)) -> dict[str, int]:
    """How many rows every table holds (the audit log grows with each request: skipped)."""
    import sqlalchemy as sa
    from sqlmodel import SQLModel

    with ctx.db.engine.connect() as conn:
        return {
            t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            for t in SQLModel.metadata.sorted_tables
            if t.name not in skip
        }
