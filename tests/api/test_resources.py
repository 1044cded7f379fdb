"""Apps, config vars, secrets, domains, nodes and the audit log through the API."""

from __future__ import annotations

from dataclasses import replace

from fastapi.testclient import TestClient

from shellwego.services.context import Context

from .conftest import Org


def test_apps_crud_by_name_or_id(client: TestClient, org_a: Org) -> None:
    r = client.post("/v1/apps", headers=org_a.h("member"), json={"name": "blog"})
    assert r.status_code == 201, r.text
    app = r.json()
    assert app["status"] == "created"
    assert app["formation"]["web"]["resources"] == {"cpu_millis": 250, "memory_bytes": 268435456}
    assert client.get("/v1/apps/blog", headers=org_a.h("viewer")).json()["id"] == app["id"]
    assert client.get(f"/v1/apps/{app['id']}", headers=org_a.h("viewer")).json()["name"] == "blog"
    r = client.patch(
        "/v1/apps/blog", headers=org_a.h("member"), json={"health_check": {"path": "/healthz"}}
    )
    assert r.status_code == 200 and r.json()["health_check"]["path"] == "/healthz"
    assert client.delete("/v1/apps/blog", headers=org_a.h("member")).status_code == 204
    assert client.get("/v1/apps/blog", headers=org_a.h()).status_code == 404


def test_duplicate_names_differing_in_case_conflict(client: TestClient, org_a: Org) -> None:
    assert client.post("/v1/apps", headers=org_a.h(), json={"name": "shop"}).status_code == 201
    r = client.post("/v1/apps", headers=org_a.h(), json={"name": "SHOP"})
    assert r.status_code == 409
    assert r.json()["type"].endswith("/conflict")
    names = [a["name"] for a in client.get("/v1/apps", headers=org_a.h()).json()["items"]]
    assert names == ["shop"]
    r = client.post("/v1/organizations", headers=org_a.h(), json={"name": "Dup", "slug": "ORG-A"})
    assert r.status_code == 409
    r = client.post(
        "/v1/organizations/org-a/members",
        headers=org_a.h(),
        json={"email": "Admin@A.example", "role": "viewer", "password": "long enough password"},
    )
    assert r.status_code == 409


def test_app_names_are_unique_across_organizations(
    client: TestClient, ctx: Context, org_a: Org, org_b: Org
) -> None:
    """<app>.<base domain> is one hostname for the whole platform."""
    from .conftest import row_counts

    assert client.post("/v1/apps", headers=org_b.h(), json={"name": "shop"}).status_code == 201
    assert client.post("/v1/apps", headers=org_a.h(), json={"name": "mine"}).status_code == 201
    before = row_counts(ctx)
    attempts = [("POST", "/v1/apps", name) for name in ("shop", "SHOP", "Shop")]
    attempts += [("PATCH", "/v1/apps/mine", name) for name in ("shop", "sHoP")]
    for method, path, name in attempts:
        body = {"name": name}
        r = client.request(method, path, headers=org_a.h(), json=body)
        assert r.status_code == 409, (method, name)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == f"app name {name!r} is already taken"
        assert "org-b" not in r.text and org_b.id not in r.text  # whose it is stays unsaid
    assert row_counts(ctx) == before
    assert client.get("/v1/apps/mine", headers=org_a.h()).json()["name"] == "mine"
    # the name is taken, the app still is not A's to see
    assert client.get("/v1/apps/shop", headers=org_a.h()).status_code == 404
    # once B lets the name go, A may take it
    r = client.patch("/v1/apps/shop", headers=org_b.h(), json={"name": "shop-old"})
    assert r.status_code == 200
    r = client.patch("/v1/apps/mine", headers=org_a.h(), json={"name": "Shop"})
    assert r.status_code == 200 and r.json()["name"] == "Shop"


def test_bad_input_is_a_clear_4xx_and_changes_nothing(client: TestClient, org_a: Org) -> None:
    cases = [
        {"name": "ok-name", "unknown": 1},
        {"name": 42},
        {"name": "bad name!"},
        {},
    ]
    for body in cases:
        r = client.post("/v1/apps", headers=org_a.h(), json=body)
        assert r.status_code == 422, body
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"]
    r = client.post(
        "/v1/apps", headers={**org_a.h(), "content-type": "application/json"}, content=b"{not json"
    )
    assert r.status_code == 422
    r = client.post(
        "/v1/apps",
        headers={**org_a.h(), "content-type": "application/json"},
        content=b'{"name": "' + b"a" * 2_000_000 + b'"}',
    )
    assert r.status_code == 413
    assert client.get("/v1/apps", headers=org_a.h()).json()["items"] == []


def test_cursor_pagination(client: TestClient, org_a: Org) -> None:
    names = [f"app-{i:02d}" for i in range(7)]
    for name in names:
        assert client.post("/v1/apps", headers=org_a.h(), json={"name": name}).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/apps", headers=org_a.h(), params=params).json()
        seen += [a["name"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    assert client.get("/v1/apps", headers=org_a.h(), params={"limit": 0}).status_code == 422
    filtered = client.get("/v1/apps", headers=org_a.h(), params={"status": "running"}).json()
    assert filtered["items"] == []


def test_config_vars_set_get_unset(client: TestClient, org_a: Org) -> None:
    client.post("/v1/apps", headers=org_a.h(), json={"name": "api"})
    r = client.patch(
        "/v1/apps/api/config",
        headers=org_a.h("member"),
        json={"DATABASE_URL": "postgres://u:p@db/x", "DEBUG": "1"},
    )
    assert r.status_code == 200
    assert r.json() == {"DATABASE_URL": "postgres://u:p@db/x", "DEBUG": "1"}
    r = client.patch("/v1/apps/api/config", headers=org_a.h(), json={"DEBUG": None})
    assert r.json() == {"DATABASE_URL": "postgres://u:p@db/x"}
    assert client.get("/v1/apps/api/config", headers=org_a.h("viewer")).json() == {
        "DATABASE_URL": "postgres://u:p@db/x"
    }
    for bad in ({"1BAD": "x"}, {"OK": 5}, {}, {"MISSING": None}):
        r = client.patch("/v1/apps/api/config", headers=org_a.h(), json=bad)
        assert r.status_code in (404, 422), bad
    assert client.get("/v1/apps/api/config", headers=org_a.h()).json() == {
        "DATABASE_URL": "postgres://u:p@db/x"
    }


def test_secrets_are_write_only_with_versions_rotate_reveal(client: TestClient, org_a: Org) -> None:
    client.post("/v1/apps", headers=org_a.h(), json={"name": "api"})
    r = client.post(
        "/v1/secrets",
        headers=org_a.h("member"),
        json={"name": "STRIPE_KEY", "value": "sk_live_123", "app": "api"},
    )
    assert r.status_code == 201
    secret = r.json()
    assert "sk_live_123" not in r.text and "value" not in secret
    r = client.post(
        "/v1/secrets",
        headers=org_a.h(),
        json={"name": "STRIPE_KEY", "value": "other", "app": "api"},
    )
    assert r.status_code == 409 and "other" not in r.text
    r = client.post(
        f"/v1/secrets/{secret['id']}/versions",
        headers=org_a.h("member"),
        json={"value": "sk_live_456"},
    )
    assert r.status_code == 201 and r.json()["current_version"] == 2
    versions = client.get(f"/v1/secrets/{secret['id']}/versions", headers=org_a.h()).json()["items"]
    assert [v["version"] for v in versions] == [1, 2]
    assert "sk_live" not in str(versions)
    listed = client.get("/v1/secrets", headers=org_a.h("viewer"), params={"app": "api"})
    assert "sk_live" not in listed.text
    assert (
        client.post(f"/v1/secrets/{secret['id']}/reveal", headers=org_a.h("member")).status_code
        == 403
    )
    r = client.post(f"/v1/secrets/{secret['id']}/reveal", headers=org_a.h("admin"))
    assert r.json() == {"name": "STRIPE_KEY", "version": 2, "value": "sk_live_456"}
    r = client.post(
        "/v1/secrets/STRIPE_KEY/reveal",
        headers=org_a.h("admin"),
        params={"app": "api", "version": 1},
    )
    assert r.json()["value"] == "sk_live_123"
    assert client.delete(f"/v1/secrets/{secret['id']}", headers=org_a.h()).status_code == 204
    assert client.get(f"/v1/secrets/{secret['id']}", headers=org_a.h()).status_code == 404


def test_secret_values_never_reach_the_audit_log(client: TestClient, org_a: Org) -> None:
    client.post("/v1/apps", headers=org_a.h(), json={"name": "api"})
    client.post(
        "/v1/secrets",
        headers=org_a.h(),
        json={"name": "TOKEN", "value": "very-secret-value", "app": "api"},
    )
    client.patch("/v1/apps/api/config", headers=org_a.h(), json={"PASSWORD": "config-secret"})
    entries = client.get("/v1/audit", headers=org_a.h("admin"), params={"limit": 500}).json()
    assert entries["items"], "mutations must be audited"
    text = str(entries)
    assert "very-secret-value" not in text and "config-secret" not in text
    actions = [e["action"] for e in entries["items"]]
    assert "secrets.create" in actions and "config.update" in actions and "apps.create" in actions
    last = entries["items"][-1]
    assert last["actor_id"] and last["source_ip"] and last["result"] == "success"
    assert last["target_type"] == "apps" and last["target_id"] == "api"
    assert client.get("/v1/audit", headers=org_a.h("member")).status_code == 403


def test_failed_mutations_are_audited_too(client: TestClient, org_a: Org) -> None:
    client.post("/v1/apps", headers=org_a.h("viewer"), json={"name": "nope"})
    entries = client.get("/v1/audit", headers=org_a.h(), params={"action": "apps.create"}).json()
    assert [(e["result"], e["status_code"]) for e in entries["items"]] == [("failure", 403)]


def test_domains_add_list_remove(client: TestClient, org_a: Org, ctx: Context) -> None:
    client.post("/v1/apps", headers=org_a.h(), json={"name": "web"})
    r = client.post(
        "/v1/domains", headers=org_a.h("member"), json={"hostname": "WWW.Example.com", "app": "web"}
    )
    assert r.status_code == 201, r.text
    domain = r.json()
    assert domain["hostname"] == "www.example.com" and domain["status"] == "pending"
    # the platform's app names are local (web.localhost): no CNAME is suggested to them
    assert {d["record_type"] for d in domain["dns"]} == {"TXT"}
    local = ctx.settings
    ctx.settings = replace(local, base_domain="apps.example.net")
    try:  # under a public base domain, a CNAME to the app's name proves it too
        shown = client.get("/v1/domains/www.example.com", headers=org_a.h()).json()
    finally:
        ctx.settings = local
    assert {
        (d["record_type"], d["value"]) for d in shown["dns"] if d["record_type"] == "CNAME"
    } == {("CNAME", "web.apps.example.net")}
    r = client.post(
        "/v1/domains", headers=org_a.h(), json={"hostname": "www.EXAMPLE.com", "app": "web"}
    )
    assert r.status_code == 409
    r = client.post("/v1/domains", headers=org_a.h(), json={"hostname": "not a host", "app": "web"})
    assert r.status_code == 422
    records: dict[tuple[str, str], list[str]] = {}
    ctx.resolver = lambda kind, name: records.get((kind, name), [])
    r = client.post("/v1/domains/www.example.com/actions/verify", headers=org_a.h())
    assert r.json()["status"] == "pending" and "_shellwego-challenge" in r.json()["last_error"]
    txt = next(d for d in domain["dns"] if d["record_type"] == "TXT")
    records[("TXT", txt["name"])] = [txt["value"]]
    r = client.post(f"/v1/domains/{domain['id']}/actions/verify", headers=org_a.h())
    assert r.json()["status"] == "active" and r.json()["verified_at"]
    assert [
        d["hostname"] for d in client.get("/v1/domains", headers=org_a.h()).json()["items"]
    ] == ["www.example.com"]
    assert client.delete("/v1/domains/www.example.com", headers=org_a.h()).status_code == 204
    assert client.get("/v1/domains", headers=org_a.h()).json()["items"] == []


def test_nodes_are_for_operators_only(
    client: TestClient, org_a: Org, org_b: Org, ctx: Context
) -> None:
    from shellwego.models import NodeCapacity
    from shellwego.services import nodes

    join = nodes.create_join_token(ctx, "test")
    reg = nodes.register(
        ctx,
        join,
        "worker-1",
        NodeCapacity(cpu_millis=4000, memory_bytes=8 << 30),
        ["process"],
        {"zone": "a"},
        "0.1.0",
        "127.0.0.1",
    )
    # A's owner bootstrapped the platform: the operator. Nobody else is one.
    others = [org_a.h(role) for role in ("admin", "member", "viewer")] + [org_b.h()]
    for headers in others:
        for method, path in (
            ("GET", "/v1/nodes"),
            ("GET", "/v1/nodes/worker-1"),
            ("GET", f"/v1/nodes/{reg.node.id}"),
            ("POST", "/v1/nodes/worker-1/actions/drain"),
            ("POST", "/v1/nodes/worker-1/actions/uncordon"),
        ):
            r = client.request(method, path, headers=headers)
            assert r.status_code == 403, (method, path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert "capacity" not in r.text and "127.0.0.1" not in r.text
    listed = client.get("/v1/nodes", headers=org_a.h()).json()["items"]
    assert [n["hostname"] for n in listed] == ["worker-1"]
    assert "token_hash" not in listed[0]
    assert client.get("/v1/nodes/worker-1", headers=org_a.h()).json()["status"] == "ready"
    r = client.post(f"/v1/nodes/{reg.node.id}/actions/drain", headers=org_a.h())
    assert r.status_code == 200 and r.json()["status"] == "draining"
    assert client.get("/v1/nodes/nope", headers=org_a.h()).status_code == 404


def test_health_and_openapi(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    spec = client.get("/openapi.json").json()
    assert "/v1/apps/{app}" in spec["paths"]
    assert client.get("/docs").status_code == 200
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
