"""Walk every route: tenants cannot see each other, viewers cannot change anything,
nothing answers without a token, and node tokens reach only their own node.

The walk is driven by the application's own route table (``client.app.routes``, every
method of every route, the git smart-HTTP route and the agent protocol included). A
route that is neither authenticated (by a user token, a node token or a join token) nor
listed in ``PUBLIC`` with a reason fails :func:`test_every_route_is_walked`, and every
authenticated route is walked by the tests below without being named in them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from shellwego.api import deps
from shellwego.api.routes import agent as agent_routes
from shellwego.api.routes import edge as edge_routes
from shellwego.models import App, Release, Resources
from shellwego.services import auth, deployments, nodes, placement
from shellwego.services.context import Context
from shellwego.store import repository as repo
from support.releases import slug_release

from .conftest import PASSWORD, Org, row_counts

# route name → why it answers without a token
PUBLIC: dict[str, str] = {
    "health": "the liveness probe",
    "home": "a page saying what the API's address is and where the docs are",
    "platform.bootstrap": "makes the first organization and owner; refused once a user exists",
    "auth.login": "trades an email and a password for a token",
    "edge.ask": "answers the local edge only (loopback), before Caddy gets a certificate",
    "openapi": "the API's description",
    "swagger_ui_html": "the docs page",
    "swagger_ui_redirect": "the docs page's OAuth redirect",
    "redoc_html": "the docs page (ReDoc)",
}
# routes that check the API token in the handler instead of through a dependency
SELF_AUTHENTICATED = {"git.http_backend": "git sends HTTP Basic, an API token as password"}
# mutations a viewer may make: they act on the caller's own account
SELF_SERVICE = {
    "auth.logout": "revokes the token the caller used",
    "tokens.create": "a personal token, with the caller's own role",
    "tokens.revoke": "the caller's own tokens only",
    "organizations.create": "a new organization the caller then owns",
}
# platform resources (operators only), not any tenant's
PLATFORM_PREFIX = "/v1/nodes"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
# every path parameter a route may take; a new one needs a value in Tenant below
TENANT_PARAMS = {"app", "secret", "domain", "org", "user", "token_id", "deployment_id"}
OTHER_PARAMS = {"version", "node", "digest", "path"}
# git smart HTTP, by method: (repository path, query, is it part of a push)
GIT: dict[str, list[tuple[str, dict[str, str], bool]]] = {
    "GET": [
        ("info/refs", {"service": "git-upload-pack"}, False),
        ("info/refs", {"service": "git-receive-pack"}, True),
    ],
    "POST": [("git-upload-pack", {}, False), ("git-receive-pack", {}, True)],
}

BODIES: dict[str, dict[str, Any]] = {
    "apps.create": {"name": "new-app"},
    "apps.update": {"redirect_https": True},
    "config.update": {"NEW_VAR": "1"},
    "secrets.create": {"name": "NEW_SECRET", "value": "v", "app": None},
    "secrets.rotate": {"value": "rotated"},
    "domains.create": {"hostname": "new.example.org", "app": None},
    "members.add": {"email": "new@x.example", "role": "member", "password": PASSWORD},
    "members.update": {"role": "viewer"},
    "tokens.create": {"name": "t"},
    "organizations.create": {"name": "New", "slug": "new-org"},
    "apps.run": {"command": ["true"]},
    "formation.update": {"web": 2},
    "formation.scale": {"replicas": 2},
    "releases.rollback": {"version": 1},
    "deploys.image": {"image": "nginx:1.27"},
    "agent.register": {"hostname": "walk", "capacity": {"cpu_millis": 1, "memory_bytes": 1}},
    "agent.heartbeat": {"instances": []},
    "agent.logs": {"lines": []},
}


# ---- the route table ----------------------------------------------------------------


def _routes(client: TestClient) -> list[BaseRoute]:
    return [rc.original_route for rc in iter_route_contexts(client.app.routes)]  # type: ignore[attr-defined]


def _calls_in(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls_in(sub)


def _kind(route: BaseRoute) -> str | None:
    """public, user (an API token), node (a node token), join (a join token), edge (an
    edge node's join or node token), or None."""
    name = getattr(route, "name", "")
    if name in PUBLIC:
        return "public"
    if name in SELF_AUTHENTICATED:
        return "user"
    if not isinstance(route, APIRoute):
        return None
    calls = set(_calls_in(route.dependant))
    if deps.principal in calls:
        return "user"
    if agent_routes.node_of in calls:
        return "node"
    if agent_routes.join_token in calls:
        return "join"
    if edge_routes.edge_node in calls:
        return "edge"
    return None


def _of_kind(client: TestClient, *kinds: str) -> list[APIRoute]:
    return [r for r in _routes(client) if _kind(r) in kinds]  # type: ignore[misc]


def _params(route: APIRoute) -> list[str]:
    return list(route.param_convertors)


def _query_names(route: APIRoute) -> set[str]:
    return {p.name for p in route.dependant.query_params}


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: str | None
    mutation: bool

    def send(self, client: TestClient, headers: dict[str, str]) -> int:
        extra = {"content-type": "application/json"} if self.body is not None else {}
        r = client.request(
            self.method,
            self.path,
            params=dict(self.query),
            headers={**headers, **extra},
            content=self.body,
        )
        return r.status_code

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query)
        return f"{self.name}: {self.method} {self.path}{'?' + query if query else ''} {self.body}"


def _calls(
    route: APIRoute, values: dict[str, str], query_app: str | None, body_app: str | None
) -> list[Call]:
    """Every request the route answers (each method; each git service), with ``values``
    in its path, ``query_app`` as its ``?app=`` and ``body_app`` in its body's ``app``."""
    out = []
    for method in sorted((route.methods or set()) - {"HEAD"}):
        variants = (
            GIT[method] if route.name in SELF_AUTHENTICATED else [("", {}, method in MUTATING)]
        )
        for repo_path, query, mutation in variants:
            found = {**values, "path": repo_path}
            path = PARAM.sub(lambda m, f=found: f[m.group(1)], route.path)  # type: ignore[misc]
            q = dict(query)
            if query_app is not None and "app" in _query_names(route):
                q["app"] = query_app
            body = BODIES.get(route.name)
            if body is not None and "app" in body:
                body = {**body, "app": body_app}
            text = json.dumps(body, sort_keys=True) if body is not None else None
            out.append(Call(route.name, method, path, tuple(sorted(q.items())), text, mutation))
    return out


def _expect(client: TestClient, asks: list[tuple[Call, str, dict[str, str]]], status: int) -> None:
    """Send every call (described, with its headers); all must answer ``status``."""
    assert asks, "nothing was walked"
    wrong = []
    for call, who, headers in asks:
        got = call.send(client, headers)
        if got != status:
            wrong.append(f"{call} {who}: {got}")
    assert not wrong, "\n".join(wrong)


# ---- one of everything, per organization ----------------------------------------------


@dataclass
class Tenant:
    org: Org
    app_id: str
    by_id: dict[str, str]
    by_name: dict[str, str]


def _tenant(client: TestClient, ctx: Context, org: Org, user: str) -> Tenant:
    """One of everything in ``org``: app (with a config var, a release and a deployment),
    an app secret, a domain, a token; ``user`` is a member's email."""
    h = org.h()
    tag = org.slug.replace("-", "_").upper()
    app = client.post("/v1/apps", headers=h, json={"name": f"app-{org.slug}"}).json()
    assert client.patch(
        f"/v1/apps/{app['id']}/config", headers=h, json={"SOME_VAR": "x"}
    ).is_success
    secret = client.post(
        "/v1/secrets", headers=h, json={"name": f"S_{tag}", "value": "v", "app": app["name"]}
    ).json()
    domain = client.post(
        "/v1/domains", headers=h, json={"hostname": f"www.{org.slug}.example", "app": app["id"]}
    ).json()
    token = client.post("/v1/user/tokens", headers=h, json={"name": "x"}).json()
    members = client.get(f"/v1/organizations/{org.slug}/members", headers=h).json()["items"]
    member = next(m for m in members if m["email"] == user)
    who = auth.authenticate(ctx, org.tokens["owner"])
    with ctx.db.session() as s:
        row = repo.require(s, App, "app", id=app["id"])
        release = slug_release(ctx, s, who, row, {"web": "serve"}, description="walk")
        deployment = deployments.start(ctx, s, who, row, release, reason="walk")
    common = {"token_id": token["id"], "deployment_id": deployment.id, "version": "1"}
    return Tenant(
        org=org,
        app_id=app["id"],
        by_id={
            **common,
            "app": app["id"],
            "secret": secret["id"],
            "domain": domain["id"],
            "org": org.id,
            "user": member["user_id"],
        },
        by_name={
            **common,
            "app": app["name"],
            "secret": secret["name"],
            "domain": domain["hostname"],
            "org": org.slug,
            "user": member["email"],
        },
    )


@pytest.fixture
def tenants(client: TestClient, ctx: Context, org_a: Org, org_b: Org) -> tuple[Tenant, Tenant]:
    return (
        _tenant(client, ctx, org_a, "member@a.example"),
        _tenant(client, ctx, org_b, "owner@b.example"),
    )


def _view_of(client: TestClient, t: Tenant) -> dict[str, Any]:
    """Everything the tenant's owner can see of their organization."""
    h, app = t.org.h(), t.by_id["app"]
    paths = [
        f"/v1/apps/{app}",
        f"/v1/apps/{app}/config",
        f"/v1/apps/{app}/releases",
        f"/v1/apps/{app}/deployments",
        f"/v1/apps/{app}/instances",
        f"/v1/secrets/{t.by_id['secret']}",
        f"/v1/secrets/{t.by_id['secret']}/versions",
        "/v1/secrets",
        "/v1/domains",
        f"/v1/organizations/{t.org.slug}/members",
        "/v1/user/tokens",
    ]
    view = {}
    for path in paths:
        r = client.get(path, headers=h)
        assert r.status_code == 200, (path, r.text)
        view[path] = r.json()
    for token in view["/v1/user/tokens"]["items"]:
        token.pop("last_used_at")  # the owner's own reads touch their token
    return view


def _node_token(client: TestClient, ctx: Context, hostname: str, memory: int = 1 << 30) -> str:
    join = nodes.create_join_token(ctx, "walk")
    r = client.post(
        "/v1/agent/register",
        headers={"Authorization": f"Bearer {join}"},
        json={"hostname": hostname, "capacity": {"cpu_millis": 1000, "memory_bytes": memory}},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["node_token"])


# ---- the tests ------------------------------------------------------------------------


def test_every_route_is_walked(client: TestClient) -> None:
    problems = []
    seen = set()
    for route in _routes(client):
        name = getattr(route, "name", "?")
        seen.add(name)
        kind = _kind(route)
        if kind is None:
            problems.append(
                f"{getattr(route, 'path', route)} ({name}): neither authenticated by a user, "
                "node or join token nor listed in PUBLIC with a reason"
            )
            continue
        if kind == "public" or not isinstance(route, APIRoute):
            continue
        unknown = set(_params(route)) - TENANT_PARAMS - OTHER_PARAMS
        if unknown:
            problems.append(f"{route.path}: give the walk a value for {sorted(unknown)}")
        if route.body_field is not None and route.name not in BODIES:
            problems.append(f"{route.path} ({route.name}): give the walk a valid body")
    assert not problems, "\n".join(problems)
    # the table really is the whole app: the git and agent routes and the docs are in it
    assert {"git.http_backend", "agent.assignments", "openapi", "apps.create"} <= seen
    assert set(PUBLIC) | set(SELF_AUTHENTICATED) | set(SELF_SERVICE) <= seen, "stale names"


def _foreign(route: APIRoute, ours: Tenant, theirs: Tenant) -> Iterator[tuple[Call, bool]]:
    """Requests naming B's resources, by id and by name: all of them B's, and (where a
    route takes several) each one B's while the others are A's (flagged True)."""
    refs = [p for p in _params(route) if p in TENANT_PARAMS]
    if "app" in _query_names(route):
        refs.append("?app")
    if "app" in BODIES.get(route.name, {}):
        refs.append("body.app")
    if not refs:
        return
    groups = [set(refs)] + ([{r} for r in refs] if len(refs) > 1 else [])
    for form in (theirs.by_id, theirs.by_name):
        for foreign in groups:
            pick = {r: (form if r in foreign else ours.by_name) for r in refs}
            values = {
                **ours.by_name,
                **{p: pick[p][p] for p in refs if p in TENANT_PARAMS},
                "node": "",
                "digest": "",
            }
            query_app = pick["?app"]["app"] if "?app" in refs else None
            body_app = pick["body.app"]["app"] if "body.app" in refs else None
            for call in _calls(route, values, query_app, body_app):
                yield call, foreign != set(refs)


def test_member_of_a_gets_404_for_every_resource_of_b(
    client: TestClient, ctx: Context, tenants: tuple[Tenant, Tenant]
) -> None:
    ours, theirs = tenants
    before, seen_by_b = row_counts(ctx), _view_of(client, theirs)
    asks: list[tuple[Call, str, dict[str, str]]] = []
    for route in _of_kind(client, "user"):
        if route.path.startswith(PLATFORM_PREFIX):
            continue
        for call, mixed in dict.fromkeys(_foreign(route, ours, theirs)):
            # A's own parts are reached first in a mixed request: a member may then be
            # refused for their role (403) before B's part is looked up, so ask as owner
            for role in ("owner",) if mixed else ("owner", "member"):
                asks.append((call, f"as {role} of A", ours.org.h(role)))
    _expect(client, asks, 404)
    walked = {call.name for call, _, _ in asks}
    assert {
        "apps.get",
        "apps.delete",
        "config.update",
        "secrets.reveal",
        "secrets.list",
        "domains.create",
        "domains.list",
        "members.update",
        "deployments.get",
        "git.http_backend",
        "tokens.revoke",
        "organizations.get",
        "builds.create",
    } <= walked
    assert row_counts(ctx) == before, "a refused request changed something"
    assert _view_of(client, theirs) == seen_by_b


def test_lists_show_only_the_callers_organization(
    client: TestClient, tenants: tuple[Tenant, Tenant]
) -> None:
    ours, theirs = tenants
    h = ours.org.h()
    for path in ("/v1/apps", "/v1/secrets", "/v1/domains", "/v1/audit", "/v1/user/tokens"):
        items = client.get(path, headers=h, params={"limit": 500}).json()["items"]
        assert items, path
        assert all(i.get("organization_id") in (None, ours.org.id) for i in items), path
        assert "org-b" not in str(items) and theirs.app_id not in str(items), path
    orgs = client.get("/v1/organizations", headers=h).json()["items"]
    assert [o["slug"] for o in orgs] == ["org-a"]
    members = client.get("/v1/organizations/org-a/members", headers=h).json()["items"]
    assert "owner@b.example" not in str(members)


def test_viewer_gets_403_on_every_mutation(
    client: TestClient, ctx: Context, tenants: tuple[Tenant, Tenant]
) -> None:
    ours, _ = tenants
    values = {**ours.by_name, "node": "walk-node", "digest": ""}
    _node_token(client, ctx, "walk-node")
    before, seen = row_counts(ctx), _view_of(client, ours)
    asks = [
        (call, "as viewer", ours.org.h("viewer"))
        for route in _of_kind(client, "user")
        if route.name not in SELF_SERVICE
        for call in _calls(route, values, ours.by_name["app"], ours.by_name["app"])
        if call.mutation
    ]
    _expect(client, asks, 403)
    walked = {call.name for call, _, _ in asks}
    assert {
        "apps.create",
        "apps.delete",
        "config.update",
        "secrets.rotate",
        "secrets.reveal",
        "domains.create",
        "nodes.drain",
        "members.add",
        "git.http_backend",
        "builds.create",
    } <= walked
    assert row_counts(ctx) == before
    assert _view_of(client, ours) == seen


def test_platform_routes_are_for_operators_only(
    client: TestClient, ctx: Context, org_a: Org, org_b: Org
) -> None:
    _node_token(client, ctx, "walk-node")
    values = {"node": "walk-node"}
    non_operators = [org_a.h(r) for r in ("admin", "member", "viewer")] + [org_b.h()]
    routes = [r for r in _of_kind(client, "user") if r.path.startswith(PLATFORM_PREFIX)]
    assert {r.name for r in routes} >= {"nodes.list", "nodes.get", "nodes.drain"}
    for route in routes:
        for call in _calls(route, values, None, None):
            for headers in non_operators:
                assert call.send(client, headers) == 403, call
            if not call.mutation:
                assert call.send(client, org_a.h()) == 200, call  # the bootstrap owner


@pytest.mark.parametrize("credential", ["none", "garbage", "unknown", "node", "join", "user"])
def test_every_route_needs_the_right_token(
    client: TestClient, ctx: Context, tenants: tuple[Tenant, Tenant], credential: str
) -> None:
    """User routes refuse anything but a user token; agent and edge routes anything but
    their own node or join token: 401 for every route, method and git service."""
    ours, _ = tenants
    node = _node_token(client, ctx, "walk-node")
    tokens = {
        "none": None,
        "garbage": "garbage",
        "unknown": "swg_not-a-real-token",
        "node": node,
        "join": nodes.create_join_token(ctx, "other"),
        "user": ours.org.tokens["owner"],
    }
    token = tokens[credential]
    accepted_by = {"node": {"node", "edge"}, "join": {"join", "edge"}, "user": {"user"}}.get(
        credential, set()
    )
    values = {**ours.by_name, "node": "walk-node", "digest": "0" * 64}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    _expect(
        client,
        [
            (call, f"with a {credential} token", headers)
            for route in _of_kind(client, "user", "node", "join", "edge")
            if _kind(route) not in accepted_by
            for call in _calls(route, values, ours.by_name["app"], ours.by_name["app"])
        ],
        401,
    )


def test_a_node_token_reaches_only_its_own_node(
    client: TestClient, ctx: Context, tenants: tuple[Tenant, Tenant]
) -> None:
    _, theirs = tenants
    # each node has room for exactly one instance, so one lands on each
    memory = Resources().memory_bytes + (1 << 20)
    first, second = (_node_token(client, ctx, f"node-{n}", memory) for n in (1, 2))
    with ctx.db.session() as s:
        app = repo.require(s, App, "app", id=theirs.app_id)
        release = repo.require(s, Release, "release", app_id=app.id, version=1)
        placed = placement.place(ctx, s, app, release, "web", 2, Resources(), deployment_id=None)
        on_node = {i.id: i.node_id for i in placed}
    views = client.get(f"/v1/apps/{theirs.app_id}/instances", headers=theirs.org.h()).json()
    by_node: dict[str, set[str]] = {}
    for view in views:
        by_node.setdefault(view["node_hostname"], set()).add(view["id"])
    assert set(by_node) == {"node-1", "node-2"} and len(on_node) == 2
    for hostname, token in (("node-1", first), ("node-2", second)):
        r = client.get("/v1/agent/assignments", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert {i["instance_id"] for i in r.json()["instances"]} == by_node[hostname]
    # the second node reports on, and ships logs for, the first node's instance: ignored
    theirs_on_first = next(iter(by_node["node-1"]))
    h2 = {"Authorization": f"Bearer {second}"}
    r = client.post(
        "/v1/agent/heartbeat",
        headers=h2,
        json={"instances": [{"instance_id": theirs_on_first, "state": "crashed", "restarts": 7}]},
    )
    assert r.status_code == 200
    r = client.post(
        "/v1/agent/logs",
        headers=h2,
        json={
            "lines": [
                {
                    "instance_id": theirs_on_first,
                    "timestamp": "2030-01-01T00:00:00Z",
                    "line": "forged",
                }
            ]
        },
    )
    assert r.status_code == 204
    after = client.get(f"/v1/apps/{theirs.app_id}/instances", headers=theirs.org.h()).json()
    mine = next(v for v in after if v["id"] == theirs_on_first)
    assert (mine["state"], mine["restarts"]) == ("pending", 0)
    logs = client.get(f"/v1/apps/{theirs.app_id}/logs", headers=theirs.org.h())
    assert logs.status_code == 200 and "forged" not in logs.text
