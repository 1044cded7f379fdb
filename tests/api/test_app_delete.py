"""DELETE /v1/apps/{app}: the app is gone for its users at once, its name and custom
domains free again; its row goes once its instances are seen gone."""

from __future__ import annotations

from fastapi.testclient import TestClient

from shellwego.controllers import rollout
from shellwego.models import App, Instance, Node
from shellwego.services import agents
from shellwego.services.context import Context
from shellwego.store import repository as repo

from .conftest import Org
from .test_deploys import PROBLEM, deployed


def test_a_deleted_app_answers_404_everywhere_and_its_names_are_free_at_once(
    client: TestClient, ctx: Context, org_a: Org
) -> None:
    deployed(client, ctx, org_a)
    h = org_a.h()
    app_id = client.get("/v1/apps/blog", headers=h).json()["id"]
    assert client.post(
        "/v1/domains", headers=h, json={"hostname": "www.blog.example", "app": "blog"}
    ).status_code == 201
    assert client.post(
        "/v1/secrets", headers=h, json={"name": "TOKEN", "value": "s3cret", "app": "blog"}
    ).status_code == 201
    assert client.patch("/v1/apps/blog/config", headers=h, json={"A": "1"}).status_code == 200

    r = client.delete("/v1/apps/blog", headers=org_a.h("member"))
    assert (r.status_code, r.content) == (204, b"")

    for ref in ("blog", "BLOG", app_id):
        for method, path, body in (
            ("GET", "", None),
            ("PATCH", "", {"redirect_https": True}),
            ("DELETE", "", None),
            ("GET", "/config", None),
            ("PATCH", "/config", {"A": "2"}),
            ("POST", "/scale", {"replicas": 2}),
            ("PATCH", "/formation", {"web": 2}),
            ("POST", "/deploy", {"image": "nginx:1.27"}),
            ("POST", "/actions/restart", None),
            ("GET", "/releases", None),
            ("GET", "/instances", None),
            ("GET", "/events", None),
        ):
            r = client.request(method, f"/v1/apps/{ref}{path}", headers=h, json=body)
            assert r.status_code == 404, (method, ref, path, r.text)
            assert r.headers["content-type"] == PROBLEM
    assert client.get("/v1/apps", headers=h).json()["items"] == []
    assert client.get("/v1/apps", headers=h, params={"status": "deleting"}).json()["items"] == []
    assert client.get("/v1/status", headers=h).json()["apps"] == 0
    assert client.get("/v1/domains", headers=h).json()["items"] == []
    assert client.get("/v1/domains/www.blog.example", headers=h).status_code == 404
    assert client.get("/v1/secrets", headers=h).json()["items"] == []

    # the name and the custom domain are free at once, though the old row is still there
    r = client.post("/v1/apps", headers=h, json={"name": "blog"})
    assert r.status_code == 201, r.text
    assert r.json()["id"] != app_id
    assert client.post(
        "/v1/domains", headers=h, json={"hostname": "www.blog.example", "app": "blog"}
    ).status_code == 201
    assert client.get("/v1/apps/blog/config", headers=h).json() == {}
    with ctx.db.session() as s:
        assert repo.get(s, App, id=app_id) is not None
        assert {i.desired_state for i in repo.find_all(s, Instance, app_id=app_id)} == {"stopped"}

    # its agent stops listing the instance: the row goes
    with ctx.db.session() as s:
        node = repo.find_all(s, Node)[0]
    agents.heartbeat(ctx, node, agents.Heartbeat(instances=[]))
    rollout.pass_once(ctx)
    with ctx.db.session() as s:
        assert repo.get(s, App, id=app_id) is None
        assert repo.find_all(s, Instance, app_id=app_id) == []
    assert [a["name"] for a in client.get("/v1/apps", headers=h).json()["items"]] == ["blog"]
