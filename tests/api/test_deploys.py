"""Deploy settings, placement policy, formation limits, deployments and events over HTTP."""

from __future__ import annotations

from fastapi.testclient import TestClient

from shellwego.controllers import rollout
from shellwego.models import App, DesiredState, Instance, Node, NodeCapacity
from shellwego.services import agents, auth, deployments, nodes
from shellwego.services.context import Context
from shellwego.store import repository as repo
from support.releases import slug_release

from .conftest import Org

GIB = 1024**3
PROBLEM = "application/problem+json"


def deployed(client: TestClient, ctx: Context, org: Org, name: str = "blog") -> str:
    """An app with v1 rolled out on one node (8 cores, 16 GiB); returns its deployment id."""
    join = nodes.create_join_token(ctx, "t")
    nodes.register(
        ctx,
        join,
        "n1",
        NodeCapacity(cpu_millis=8000, memory_bytes=16 * GIB),
        ["process"],
        {"region": "eu"},
        "0",
        "10.0.0.1",
    )
    assert client.post("/v1/apps", headers=org.h(), json={"name": name}).status_code == 201
    who = auth.authenticate(ctx, org.tokens["owner"])
    with ctx.db.session() as s:
        app = repo.require(s, App, "app", name=name)
        rel = slug_release(ctx, s, who, app, {"web": "x"})
        dep_id = deployments.start(ctx, s, who, app, rel, reason="test").id
    for _ in range(3):
        rollout.pass_once(ctx)
        with ctx.db.session() as s:
            node = repo.find_all(s, Node)[0]
            rows = repo.find_all(s, Instance, desired_state=DesiredState.RUNNING.value)
        body = agents.Heartbeat(
            instances=[
                agents.ObservedInstance(instance_id=i.id, state="running", healthy=True)
                for i in rows
            ]
        )
        agents.heartbeat(ctx, node, body)
    return dep_id


def test_deployment_progress_and_events(client: TestClient, ctx: Context, org_a: Org) -> None:
    dep_id = deployed(client, ctx, org_a)
    r = client.get(f"/v1/apps/blog/deployments/{dep_id}", headers=org_a.h("viewer"))
    assert r.status_code == 200, r.text
    dep = r.json()
    assert (dep["status"], dep["instances_ready"], dep["instances_total"]) == ("succeeded", 1, 1)
    assert (dep["surge"], dep["max_unavailable"]) == (1, 0)

    r = client.get("/v1/apps/blog/events", headers=org_a.h("viewer"))
    assert r.status_code == 200, r.text
    kinds = [e["type"] for e in r.json()["items"]]
    assert kinds == ["deploy.started", "deploy.succeeded"]
    assert r.json()["items"][1]["message"] == "Deployed v1"

    # cursor pagination, oldest first
    first = client.get("/v1/apps/blog/events?limit=1", headers=org_a.h()).json()
    assert [e["type"] for e in first["items"]] == ["deploy.started"]
    rest = client.get(
        f"/v1/apps/blog/events?limit=1&cursor={first['next_cursor']}", headers=org_a.h()
    ).json()
    assert [e["type"] for e in rest["items"]] == ["deploy.succeeded"]
    assert rest["next_cursor"] is None

    # newest first: the cursor pages on to older events
    newest = client.get("/v1/apps/blog/events?order=desc&limit=1", headers=org_a.h()).json()
    assert [e["type"] for e in newest["items"]] == ["deploy.succeeded"]
    older = client.get(
        f"/v1/apps/blog/events?order=desc&limit=1&cursor={newest['next_cursor']}",
        headers=org_a.h(),
    ).json()
    assert ([e["type"] for e in older["items"]], older["next_cursor"]) == (["deploy.started"], None)
    both = client.get("/v1/apps/blog/events?order=desc", headers=org_a.h()).json()["items"]
    assert both == r.json()["items"][::-1]
    r = client.get("/v1/apps/blog/events?order=newest", headers=org_a.h())
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM

    # filtered by deployment
    r = client.post("/v1/apps/blog/actions/restart", headers=org_a.h())
    assert r.status_code == 202
    everything = client.get("/v1/apps/blog/events", headers=org_a.h()).json()["items"]
    assert len(everything) == 3
    mine = client.get(f"/v1/apps/blog/events?deployment={dep_id}", headers=org_a.h()).json()
    assert [e["data"]["deployment_id"] for e in mine["items"]] == [dep_id, dep_id]


def test_events_are_the_organizations_own(
    client: TestClient, ctx: Context, org_a: Org, org_b: Org
) -> None:
    deployed(client, ctx, org_b, name="theirs")
    r = client.get("/v1/apps/theirs/events", headers=org_a.h())
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


def test_a_scale_that_cannot_fit_is_a_problem_and_changes_nothing(
    client: TestClient, ctx: Context, org_a: Org
) -> None:
    deployed(client, ctx, org_a)
    r = client.patch(
        "/v1/apps/blog/formation", headers=org_a.h(), json={"web": {"count": 50, "size": "xlarge"}}
    )
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["title"] == "Insufficient capacity"
    assert problem["detail"].startswith(
        "cannot run 50 web instances of size xlarge for app blog on the nodes as they are now: "
        "cannot place 50 instances of app blog process web (2 cores and 2 GiB each): "
        "only 4 fit on the 1 eligible node; the largest free slot left is 0 cores"
    ), problem["detail"]
    r = client.post("/v1/apps/blog/scale", headers=org_a.h(), json={"replicas": 40})
    assert r.status_code == 409, r.text  # 32 small instances fit on the node
    app = client.get("/v1/apps/blog", headers=org_a.h()).json()
    assert app["formation"]["web"]["count"] == 1 and app["formation"]["web"]["size"] == "small"
    assert len(client.get("/v1/apps/blog/deployments", headers=org_a.h()).json()["items"]) == 1
    # what fits goes ahead
    r = client.post("/v1/apps/blog/scale", headers=org_a.h(), json={"replicas": 30})
    assert r.status_code == 200, r.text
    assert r.json()["web"]["count"] == 30


def test_deploy_settings_and_placement_policy(client: TestClient, ctx: Context, org_a: Org) -> None:
    deployed(client, ctx, org_a)
    h = org_a.h()
    r = client.patch("/v1/apps/blog", headers=h, json={"deploy": {"surge": 3}})
    assert r.status_code == 200, r.text
    assert r.json()["deploy"] == {"surge": 3, "max_unavailable": 0}
    r = client.patch(
        "/v1/apps/blog",
        headers=h,
        json={"placement": {"strategy": "spread", "constraints": {"region": "eu"}}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["placement"] == {"strategy": "spread", "constraints": {"region": "eu"}}
    assert "formation_error" in r.json()

    for bad in (
        {"deploy": {"surge": 0}},
        {"deploy": {"max_unavailable": -1}},
        {"deploy": {"surge": 2, "speed": 1}},
        {"placement": {"strategy": "diagonal"}},
        {"placement": {"constraints": {"bad key!": "x"}}},
        {"placement": {"constraints": {"region": ""}}},
    ):
        r = client.patch("/v1/apps/blog", headers=h, json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"] == PROBLEM
    r = client.patch(
        "/v1/apps/blog", headers=h, json={"placement": {"constraints": {"region": "mars"}}}
    )
    assert r.status_code == 409, r.text  # valid input the nodes cannot take now
    assert "has the labels region=mars" in r.json()["detail"]
    assert "labels on ready nodes: region=eu" in r.json()["detail"]
    r = client.post(
        "/v1/apps",
        headers=h,
        json={"name": "elsewhere", "placement": {"constraints": {"region": "mars"}}},
    )
    assert r.status_code == 409 and "has the labels region=mars" in r.json()["detail"]
    assert client.get("/v1/apps/elsewhere", headers=h).status_code == 404
    app = client.get("/v1/apps/blog", headers=h).json()
    assert app["deploy"] == {"surge": 3, "max_unavailable": 0}
    assert app["placement"] == {"strategy": "spread", "constraints": {"region": "eu"}}

    # per deploy: a rollback with its own surge; bad values are refused before anything
    r = client.post("/v1/apps/blog/rollback", headers=h, json={"version": 1, "surge": 0})
    assert r.status_code == 422
    r = client.post(
        "/v1/apps/blog/rollback", headers=h, json={"version": 1, "surge": 2, "max_unavailable": 1}
    )
    assert r.status_code == 201, r.text
    newest = client.get("/v1/apps/blog/deployments", headers=h).json()["items"][-1]
    assert (newest["surge"], newest["max_unavailable"]) == (2, 1)
    r = client.post(
        "/v1/apps/blog/builds?surge=0",
        headers={**h, "content-type": "application/gzip"},
        content=b"x",
    )
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
