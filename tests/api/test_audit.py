"""The audit log: exactly one entry per mutating user request, whatever its outcome,
written before the response goes out, and never holding a secret value."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import SQLModel

from shellwego.services import nodes
from shellwego.services.context import Context

from .conftest import PASSWORD, Org

LIMIT = 1024 * 1024  # the default request body limit


def _entries(ctx: Context) -> list[dict[str, Any]]:
    """Every audit row as stored, oldest first (all columns, every organization)."""
    table = SQLModel.metadata.tables["audit_logs"]
    with ctx.db.engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.id)).mappings().all()
    return [dict(r) for r in rows]


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"name": "'
    for _ in range(total // size):
        yield b"a" * size
    yield b'"}'


def test_every_mutating_request_leaves_exactly_one_entry(
    client: TestClient, ctx: Context, org_a: Org
) -> None:
    owner = client.get("/v1/user", headers=org_a.h()).json()["id"]
    viewer = client.get("/v1/user", headers=org_a.h("viewer")).json()["id"]
    h = org_a.h()
    json_h = {**h, "content-type": "application/json"}
    basic = base64.b64encode(f"x:{org_a.tokens['viewer']}".encode()).decode()
    node_join = nodes.create_join_token(ctx, "audit")

    def created(r: Any) -> str:
        return str(r.json()["id"])

    # (request, expected status, action, actor, target: a str, or a function of the response)
    cases: list[tuple[Any, int, str, str | None, Any]] = [
        (
            lambda: client.post("/v1/apps", headers=h, json={"name": "audited"}),
            201,
            "apps.create",
            owner,
            created,
        ),
        (
            lambda: client.patch("/v1/apps/audited", headers=h, json={"redirect_https": True}),
            200,
            "apps.update",
            owner,
            created,
        ),
        (
            lambda: client.post("/v1/apps", headers=h, json={"name": 42}),
            422,
            "apps.create",
            owner,
            None,
        ),
        (
            lambda: client.post("/v1/apps", headers=json_h, content=b"{not json"),
            422,
            "apps.create",
            owner,
            None,
        ),
        (
            lambda: client.post("/v1/apps", headers=json_h, content=b"x" * (LIMIT + 1)),
            413,
            "apps.create",
            owner,
            None,
        ),
        (
            lambda: client.post("/v1/apps", headers=json_h, content=_chunks(LIMIT + 1)),
            413,
            "apps.create",
            owner,
            None,
        ),
        (
            lambda: client.post("/v1/apps", headers=org_a.h("viewer"), json={"name": "nope"}),
            403,
            "apps.create",
            viewer,
            None,
        ),
        (
            lambda: client.post("/v1/nothing-here", headers=h),
            404,
            "POST /v1/nothing-here",
            owner,
            None,
        ),
        (lambda: client.delete("/v1/apps/audited"), 401, "apps.delete", None, "audited"),
        (
            lambda: client.post(
                "/v1/secrets", headers=h, json={"name": "K", "value": "v", "app": "audited"}
            ),
            201,
            "secrets.create",
            owner,
            created,
        ),
        (
            lambda: client.patch("/v1/apps/audited/config", headers=h, json={"A": "1"}),
            200,
            "config.update",
            owner,
            "audited",
        ),
        (
            lambda: client.post("/v1/user/tokens", headers=h, json={"name": "ci"}),
            201,
            "tokens.create",
            owner,
            created,
        ),
        (
            lambda: client.post(
                "/v1/auth/token", json={"email": "owner@a.example", "password": PASSWORD}
            ),
            201,
            "auth.login",
            owner,
            created,
        ),
        (
            lambda: client.post(
                "/v1/auth/token", json={"email": "owner@a.example", "password": "wrong password"}
            ),
            401,
            "auth.login",
            None,
            None,
        ),
        (
            # the API takes bearer tokens only: a Basic password there is nobody's
            lambda: client.post(
                "/v1/apps", headers={"Authorization": f"Basic {basic}"}, json={"name": "b"}
            ),
            401,
            "apps.create",
            None,
            None,
        ),
        (
            lambda: client.post(
                "/git/audited.git/git-receive-pack",
                headers={"Authorization": f"Basic {basic}"},
                content=b"0000",
            ),
            403,
            "git.push",
            viewer,
            "audited",
        ),
        (
            lambda: client.post("/git/audited.git/git-receive-pack", content=b"0000"),
            401,
            "git.push",
            None,
            "audited",
        ),
        (
            lambda: client.delete("/v1/apps/audited", headers=h),
            204,
            "apps.delete",
            owner,
            "audited",
        ),
    ]
    for request, status, action, actor, target in cases:
        before = len(_entries(ctx))
        r = request()
        assert r.status_code == status, (action, r.text)
        entries = _entries(ctx)
        assert len(entries) == before + 1, (action, entries[before:])
        entry = entries[-1]
        expected_target = target(r) if callable(target) else target
        assert (entry["action"], entry["status_code"], entry["actor_id"]) == (
            action,
            status,
            actor,
        ), entry
        assert entry["target_id"] == expected_target, entry
        assert entry["result"] == ("success" if status < 400 else "failure")
        assert entry["source_ip"] == "testclient" and entry["created_at"] is not None
        assert r.headers["x-request-id"] == entry["request_id"]
    # reads, the agent protocol and git fetches are not user mutations: no entry
    before = len(_entries(ctx))
    client.get("/v1/apps", headers=h)
    client.get("/git/audited.git/info/refs", params={"service": "git-upload-pack"})
    client.post("/git/audited.git/git-upload-pack", content=b"0000")
    client.post(
        "/v1/agent/register",
        headers={"Authorization": f"Bearer {node_join}"},
        json={"hostname": "n", "capacity": {"cpu_millis": 1, "memory_bytes": 1}},
    )
    assert len(_entries(ctx)) == before


def test_the_owner_of_an_organization_sees_its_entries(client: TestClient, org_a: Org) -> None:
    r = client.post("/v1/apps", headers=org_a.h(), json={"name": "seen"})
    entries = client.get("/v1/audit", headers=org_a.h("admin"), params={"target": r.json()["id"]})
    assert [(e["action"], e["target_type"]) for e in entries.json()["items"]] == [
        ("apps.create", "apps")
    ]
    assert client.get("/v1/audit", headers=org_a.h("member")).status_code == 403


def test_secret_values_never_reach_the_audit_log(
    client: TestClient, ctx: Context, org_a: Org
) -> None:
    h = org_a.h()
    client.post("/v1/apps", headers=h, json={"name": "api"})
    values = ["first-secret-value", "rotated-secret-value", "config-secret-value"]
    r = client.post(
        "/v1/secrets", headers=h, json={"name": "TOKEN", "value": values[0], "app": "api"}
    )
    assert r.status_code == 201
    sid = r.json()["id"]
    assert (
        client.post(f"/v1/secrets/{sid}/versions", headers=h, json={"value": values[1]}).status_code
        == 201
    )
    assert (
        client.patch("/v1/apps/api/config", headers=h, json={"PASSWORD": values[2]}).status_code
        == 200
    )
    assert client.post(f"/v1/secrets/{sid}/reveal", headers=org_a.h("admin")).status_code == 200
    # a refused value, and one in a body too large to take
    client.post("/v1/secrets", headers=h, json={"name": "1BAD", "value": values[0]})
    issued = client.post("/v1/user/tokens", headers=h, json={"name": "ci"}).json()["token"]
    rows = _entries(ctx)
    assert {
        "secrets.create",
        "secrets.rotate",
        "config.update",
        "secrets.reveal",
        "tokens.create",
    } <= {e["action"] for e in rows}
    dump = repr(rows)
    for secret in [*values, issued, PASSWORD]:
        assert secret not in dump


def test_an_audit_log_that_cannot_be_written_fails_the_request(
    client: TestClient, ctx: Context, org_a: Org
) -> None:
    """The entry is written before the response: no unaudited success goes out."""
    sqlite = ctx.db.backend == "sqlite"
    block = (
        [
            "CREATE TRIGGER no_audit BEFORE INSERT ON audit_logs "
            "BEGIN SELECT RAISE(ABORT, 'audit offline'); END"
        ]
        if sqlite
        else [
            "CREATE FUNCTION no_audit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit offline'; END $$",
            "CREATE TRIGGER no_audit BEFORE INSERT ON audit_logs "
            "FOR EACH ROW EXECUTE FUNCTION no_audit()",
        ]
    )
    unblock = (
        ["DROP TRIGGER no_audit"]
        if sqlite
        else ["DROP TRIGGER no_audit ON audit_logs", "DROP FUNCTION no_audit()"]
    )
    with ctx.db.engine.begin() as conn:
        for statement in block:
            conn.execute(sa.text(statement))
    try:
        r = client.post("/v1/apps", headers=org_a.h(), json={"name": "unaudited"})
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        assert "unaudited" not in r.text
    finally:
        with ctx.db.engine.begin() as conn:
            for statement in unblock:
                conn.execute(sa.text(statement))
