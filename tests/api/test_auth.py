"""Bootstrap, login, tokens and the current user."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from shellwego.api import create_app
from shellwego.errors import Conflict
from shellwego.models import (
    Membership,
    Organization,
    OrganizationCreate,
    PlatformFact,
    User,
    UserCreate,
)
from shellwego.models.platform import BOOTSTRAPPED
from shellwego.services import auth, nodes
from shellwego.services.context import Context
from shellwego.store import repository as repo

from .conftest import PASSWORD, Org


def test_bootstrap_only_once(client: TestClient, org_a: Org) -> None:
    r = client.post(
        "/v1/bootstrap",
        json={
            "user": {"email": "second@x.example", "password": PASSWORD},
            "organization": {"name": "X", "slug": "x"},
        },
    )
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert "already bootstrapped" in r.json()["detail"]


def test_login_and_current_user(client: TestClient, org_a: Org) -> None:
    r = client.post("/v1/auth/token", json={"email": "OWNER@a.example", "password": PASSWORD})
    assert r.status_code == 201
    token = r.json()["token"]
    assert token.startswith("swg_")
    me = client.get("/v1/user", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["email"] == "owner@a.example"
    assert "password_hash" not in me.json()


def test_wrong_password_is_401_and_says_nothing_more(client: TestClient, org_a: Org) -> None:
    for email in ("owner@a.example", "nobody@a.example"):
        r = client.post("/v1/auth/token", json={"email": email, "password": "wrong password!"})
        assert r.status_code == 401
        assert r.json()["detail"] == "invalid email or password"


def test_tokens_create_list_revoke(client: TestClient, org_a: Org) -> None:
    r = client.post("/v1/user/tokens", headers=org_a.h(), json={"name": "ci"})
    assert r.status_code == 201
    created = r.json()
    secret = created["token"]
    listed = client.get("/v1/user/tokens", headers=org_a.h()).json()["items"]
    assert created["id"] in [t["id"] for t in listed]
    assert all("token" not in t and "token_hash" not in t for t in listed)
    auth = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/user", headers=auth).status_code == 200
    assert client.delete(f"/v1/user/tokens/{created['id']}", headers=org_a.h()).status_code == 204
    assert client.get("/v1/user", headers=auth).status_code == 401
    assert client.delete(f"/v1/user/tokens/{created['id']}", headers=org_a.h()).status_code == 404


def test_logout_revokes_the_token_used(client: TestClient, org_a: Org) -> None:
    token = client.post(
        "/v1/auth/token", json={"email": "owner@a.example", "password": PASSWORD}
    ).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert client.delete("/v1/auth/token", headers=auth).status_code == 204
    assert client.get("/v1/user", headers=auth).status_code == 401


def test_tokens_are_stored_hashed(client: TestClient, org_a: Org, ctx) -> None:  # type: ignore[no-untyped-def]
    from shellwego.models import ApiToken
    from shellwego.store import repository as repo

    with ctx.db.session() as s:
        rows = repo.find_all(s, ApiToken)
    assert rows
    for row in rows:
        assert len(row.token_hash) == 64
        assert row.token_hash not in org_a.tokens.values()
        assert all(not t.endswith(row.token_hash) for t in org_a.tokens.values())


def test_member_roles(client: TestClient, org_a: Org) -> None:
    members = client.get("/v1/organizations/org-a/members", headers=org_a.h("viewer")).json()[
        "items"
    ]
    assert {m["email"]: m["role"] for m in members} == {
        "owner@a.example": "owner",
        "admin@a.example": "admin",
        "member@a.example": "member",
        "viewer@a.example": "viewer",
    }
    # an admin cannot make an owner; an owner can
    r = client.patch(
        "/v1/organizations/org-a/members/viewer@a.example",
        headers=org_a.h("admin"),
        json={"role": "owner"},
    )
    assert r.status_code == 403
    r = client.patch(
        "/v1/organizations/org-a/members/viewer@a.example",
        headers=org_a.h(),
        json={"role": "member"},
    )
    assert r.status_code == 200 and r.json()["role"] == "member"
    # the last owner cannot leave
    r = client.delete("/v1/organizations/org-a/members/owner@a.example", headers=org_a.h())
    assert r.status_code == 409


def test_concurrent_bootstraps_make_exactly_one_owner(ctx: Context) -> None:
    """Replicas (or operators) bootstrapping the same database at once: one wins."""
    racers = 6
    start = threading.Barrier(racers)

    def attempt(n: int) -> str:
        start.wait()
        try:
            auth.bootstrap(
                ctx,
                UserCreate(email=f"owner{n}@race.example", password=PASSWORD),
                OrganizationCreate(name=f"Race {n}", slug=f"race-{n}"),
            )
        except Conflict as exc:
            return str(exc)
        return "made"

    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(attempt, range(racers)))
    assert sorted(outcomes) == ["made"] + [auth.ALREADY_BOOTSTRAPPED] * (racers - 1)
    with ctx.db.session() as s:
        assert repo.count(s, User) == 1
        assert repo.count(s, Organization) == 1
        assert repo.count(s, Membership) == 1
        assert repo.count(s, PlatformFact, name=BOOTSTRAPPED) == 1


def test_a_server_replica_bootstraps_only_with_the_join_token(ctx: Context) -> None:
    """`shellwego server` refuses the first owner to whoever reaches it first: the request
    must carry the join token (the all-in-one needs none: it made its owner on start)."""
    closed = dataclasses.replace(ctx.settings, open_bootstrap=False)
    server = dataclasses.replace(ctx, settings=closed)
    join = nodes.create_join_token(ctx, "cluster")
    body = {
        "user": {"email": "ops@c.example", "password": PASSWORD},
        "organization": {"name": "C", "slug": "c"},
    }
    with TestClient(create_app(server), raise_server_exceptions=False) as client:
        for headers in ({}, {"Authorization": "Bearer swg_join_not-the-token"}):
            r = client.post("/v1/bootstrap", json=body, headers=headers)
            assert r.status_code == 401, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert "join token" in r.json()["detail"]
            assert "shellwego bootstrap" in r.json()["detail"]
        with ctx.db.session() as s:
            assert repo.count(s, User) == 0
        r = client.post("/v1/bootstrap", json=body, headers={"Authorization": f"Bearer {join}"})
        assert r.status_code == 201, r.text
        assert join not in r.text
        again = client.post(
            "/v1/bootstrap", json=body, headers={"Authorization": f"Bearer {join}"}
        )
        assert again.status_code == 409
