"""Walk every route: tenants cannot see each other, viewers cannot change anything,
and nothing answers without a token.

The walk is driven by the application's own route table: a route added without an
entry here fails :func:`test_every_route_is_covered`.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from shellwego.api.app import api_routes
from shellwego.models import NodeCapacity
from shellwego.services import nodes
from shellwego.services.context import Context

from .conftest import Org

PUBLIC = {"health", "platform.bootstrap", "auth.login", "edge.ask"}
# the agent protocol authenticates nodes, not users (tests/api/test_agent_protocol.py)
AGENT = {"agent.register", "agent.heartbeat", "agent.assignments", "agent.artifact",
         "agent.logs"}
# actions a user takes for themself, not on the organization's resources
SELF_SERVICE = {"auth.logout", "tokens.create", "tokens.revoke", "organizations.create"}
# platform-level resources shared by every tenant (nodes belong to the operator)
PLATFORM = {"nodes.list", "nodes.get", "nodes.drain", "nodes.uncordon"}

BODIES: dict[str, Any] = {
    "apps.create": {"name": "new-app"},
    "apps.update": {"redirect_https": True},
    "config.update": {"NEW_VAR": "1"},
    "secrets.create": {"name": "NEW_SECRET", "value": "v", "app": None},
    "secrets.rotate": {"value": "rotated"},
    "domains.create": {"hostname": "new.example.org", "app": None},
    "members.add": {"email": "new@x.example", "role": "member",
                    "password": "long enough password"},
    "members.update": {"role": "viewer"},
    "tokens.create": {"name": "t"},
    "organizations.create": {"name": "New", "slug": "new-org"},
    "apps.run": {"command": ["true"]},
    "formation.update": {"web": 2},
    "formation.scale": {"replicas": 2},
    "releases.rollback": {"version": 1},
}


def _routes(client: TestClient) -> list[APIRoute]:
    return [r for r in api_routes(client.app)  # type: ignore[arg-type]
            if r.path.startswith(("/v1", "/health"))]


def _resources(client: TestClient, ctx: Context, org: Org) -> dict[str, str]:
    """Create one of everything in ``org`` and return the path parameters naming them."""
    h = org.h()
    app = client.post("/v1/apps", headers=h, json={"name": f"app-{org.slug}"}).json()
    client.patch(f"/v1/apps/{app['id']}/config", headers=h, json={"SOME_VAR": "x"})
    secret = client.post("/v1/secrets", headers=h, json={
        "name": "S1", "value": "v", "app": app["name"]}).json()
    domain = client.post("/v1/domains", headers=h, json={
        "hostname": f"www.{org.slug}.example", "app": app["name"]}).json()
    token = client.post("/v1/user/tokens", headers=h, json={"name": "x"}).json()
    members = client.get(f"/v1/organizations/{org.slug}/members", headers=h).json()
    other = next(m for m in members if m["role"] != "owner") if len(members) > 1 else members[0]
    return {"app": app["name"], "secret": secret["id"], "domain": domain["hostname"],
            "org": org.slug, "user": other["email"], "token_id": token["id"],
            "version": "1", "deployment_id": "01M88D9FNBDNJ5XSVA0N4VAN49",
            "digest": "0" * 64}


def _node(ctx: Context) -> str:
    join = nodes.create_join_token(ctx, "walk")
    return nodes.register(ctx, join, "walk-node", NodeCapacity(cpu_millis=1000,
                          memory_bytes=1 << 30), ["process"], {}, "0", "127.0.0.1").node.id


def _call(client: TestClient, route: APIRoute, params: dict[str, str], headers: dict[str, str],
          app_name: str) -> int:
    path = route.path
    for name in route.param_convertors:
        path = path.replace("{" + name + "}", params[name])
    method = sorted(route.methods - {"HEAD"})[0]
    body = BODIES.get(route.name)
    if isinstance(body, dict) and "app" in body:
        body = {**body, "app": app_name}
    return client.request(method, path, headers=headers, json=body).status_code


def test_every_route_is_covered(client: TestClient) -> None:
    mutating = {r.name for r in _routes(client) if r.methods & {"POST", "PATCH", "PUT", "DELETE"}}
    needs_body = {r.name for r in _routes(client) if r.body_field is not None}
    assert needs_body <= set(BODIES) | PUBLIC | AGENT, "give a valid body for every route"
    assert mutating, "the walk must see the mutating routes"


def test_member_of_a_gets_404_for_every_resource_of_b(client: TestClient, ctx: Context,
                                                     org_a: Org, org_b: Org) -> None:
    theirs = _resources(client, ctx, org_b)
    ours = _resources(client, ctx, org_a)
    params = {**theirs, "node": _node(ctx)}
    checked = []
    for route in _routes(client):
        if route.name in PUBLIC | PLATFORM | AGENT or not route.param_convertors:
            continue
        for role in ("owner", "member"):
            status = _call(client, route, params, org_a.h(role), ours["app"])
            assert status == 404, f"{route.name} {route.path} as {role} of A: {status}"
        checked.append(route.name)
    assert len(checked) >= 15
    # and B's resources are all still there
    assert client.get(f"/v1/apps/{theirs['app']}", headers=org_b.h()).status_code == 200
    assert client.get(f"/v1/domains/{theirs['domain']}", headers=org_b.h()).status_code == 200


def test_lists_show_only_the_callers_organization(client: TestClient, ctx: Context,
                                                  org_a: Org, org_b: Org) -> None:
    _resources(client, ctx, org_b)
    for path in ("/v1/apps", "/v1/secrets", "/v1/domains", "/v1/audit", "/v1/user/tokens"):
        items = client.get(path, headers=org_a.h()).json()["items"]
        assert all(i.get("organization_id") in (None, org_a.id) for i in items), path
        assert "org-b" not in str(items), path
    orgs = client.get("/v1/organizations", headers=org_a.h()).json()
    assert [o["slug"] for o in orgs] == ["org-a"]


def test_viewer_gets_403_on_every_mutation(client: TestClient, ctx: Context, org_a: Org) -> None:
    ours = _resources(client, ctx, org_a)
    params = {**ours, "node": _node(ctx)}
    checked = []
    for route in _routes(client):
        if route.name in PUBLIC | SELF_SERVICE | AGENT:
            continue
        if not route.methods & {"POST", "PATCH", "PUT", "DELETE"}:
            continue
        if route.name == "secrets.reveal":
            pass  # a read, but admin-only: the viewer must be refused as well
        status = _call(client, route, params, org_a.h("viewer"), ours["app"])
        assert status == 403, f"{route.name} {route.path} as viewer: {status}"
        checked.append(route.name)
    assert {"apps.create", "apps.delete", "config.update", "secrets.rotate", "domains.create",
            "nodes.drain", "members.add"} <= set(checked)
    # nothing changed
    assert client.get("/v1/apps", headers=org_a.h()).json()["items"][0]["name"] == ours["app"]


@pytest.mark.parametrize("token", [None, "swg_not-a-real-token", "garbage"])
def test_every_route_needs_a_token(client: TestClient, ctx: Context, org_a: Org,
                                   token: str | None) -> None:
    ours = _resources(client, ctx, org_a)
    params = {**ours, "node": _node(ctx)}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for route in _routes(client):
        if route.name in PUBLIC:
            continue
        status = _call(client, route, params, headers, ours["app"])
        assert status == 401, f"{route.name} {route.path}: {status}"
