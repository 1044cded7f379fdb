"""A rollback restores the target release's config vars (Heroku's rollback), on both
backends: ``config`` shows what runs, and later releases keep it. Secrets are not rolled
back, and never come back as readable config vars."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from shellwego.controllers import rollout
from shellwego.models import DesiredState, Instance, Node, Release, SecretVersion
from shellwego.services import agents
from shellwego.services.context import Context
from shellwego.store import repository as repo

from .conftest import Org
from .test_deploys import deployed


def set_config(client: TestClient, org: Org, changes: dict[str, str | None]) -> int | None:
    """PATCH the config; the version of the release it made (its header)."""
    r = client.patch("/v1/apps/blog/config", headers=org.h("member"), json=changes)
    assert r.status_code == 200, r.text
    header = r.headers.get("ShellWeGo-Release")
    return int(header) if header is not None else None


def config(client: TestClient, org: Org) -> dict[str, str]:
    r = client.get("/v1/apps/blog/config", headers=org.h("member"))
    assert r.status_code == 200, r.text
    return dict(r.json())


def rollback(client: TestClient, org: Org, version: int) -> dict[str, Any]:
    r = client.post("/v1/apps/blog/rollback", headers=org.h("member"), json={"version": version})
    assert r.status_code == 201, r.text
    return dict(r.json())


def release_env(ctx: Context, version: int) -> dict[str, tuple[str, int]]:
    """What a release's config refers to: name → (secret id, version)."""
    with ctx.db.session() as s:
        release = repo.require(s, Release, "release", version=version)
        rows = {v.id: v for v in repo.find_all(s, SecretVersion)}
        return {
            name: (rows[vid].secret_id, rows[vid].version) for name, vid in release.config.items()
        }


def test_a_rollback_makes_the_target_releases_config_current(
    client: TestClient, ctx: Context, org_a: Org
) -> None:
    deployed(client, ctx, org_a)  # v1, no config
    assert set_config(client, org_a, {"GREETING": "Hello"}) == 2
    assert set_config(client, org_a, {"GREETING": "Howdy", "EXTRA": "1"}) == 3
    v2, v3 = release_env(ctx, 2), release_env(ctx, 3)

    made = rollback(client, org_a, 2)
    assert (made["version"], made["description"]) == (4, "Rollback to v2")
    assert config(client, org_a) == {"GREETING": "Hello"}
    assert release_env(ctx, 4) == v2  # the very versions v2 ran with, nothing re-encrypted

    # the next release keeps the rolled-back config: the later Howdy does not come back
    assert set_config(client, org_a, {"OTHER": "x"}) == 5
    assert config(client, org_a) == {"GREETING": "Hello", "OTHER": "x"}
    assert release_env(ctx, 5)["GREETING"] == v2["GREETING"]

    # forward again to v3: EXTRA comes back, OTHER goes
    assert rollback(client, org_a, 3)["version"] == 6
    assert config(client, org_a) == {"GREETING": "Howdy", "EXTRA": "1"}
    assert release_env(ctx, 6) == v3
    assert rollback(client, org_a, 1)["version"] == 7
    assert config(client, org_a) == {}
    assert release_env(ctx, 7) == {}

    # a config var set after that rollback gets a version of its own, above all before
    assert set_config(client, org_a, {"GREETING": "Hi"}) == 8
    assert config(client, org_a) == {"GREETING": "Hi"}
    greeting = release_env(ctx, 8)["GREETING"]
    assert greeting[0] == v3["GREETING"][0] and greeting[1] > v3["GREETING"][1]

    # a rollback to a release that does not exist changes nothing
    r = client.post("/v1/apps/blog/rollback", headers=org_a.h(), json={"version": 99})
    assert r.status_code == 404
    assert config(client, org_a) == {"GREETING": "Hi"}
    versions = [
        r["version"]
        for r in client.get("/v1/apps/blog/releases", headers=org_a.h()).json()["items"]
    ]
    assert max(versions) == 8
    # a viewer may not roll back
    r = client.post("/v1/apps/blog/rollback", headers=org_a.h("viewer"), json={"version": 2})
    assert r.status_code == 403
    assert config(client, org_a) == {"GREETING": "Hi"}


def test_secrets_are_not_rolled_back(client: TestClient, ctx: Context, org_a: Org) -> None:
    deployed(client, ctx, org_a)
    r = client.post(
        "/v1/secrets", headers=org_a.h(), json={"name": "API_KEY", "value": "old", "app": "blog"}
    )
    assert r.status_code == 201, r.text
    assert set_config(client, org_a, {"MODE": "a"}) == 2  # runs with API_KEY version 1
    r = client.post(
        "/v1/secrets/API_KEY/versions",
        headers=org_a.h(),
        params={"app": "blog"},
        json={"value": "new"},
    )
    assert r.status_code == 201, r.text
    assert set_config(client, org_a, {"MODE": "b"}) == 3

    assert rollback(client, org_a, 2)["version"] == 4
    assert config(client, org_a) == {"MODE": "a"}
    env = release_env(ctx, 4)
    assert env["API_KEY"][1] == 2  # the rotated value stays: an old key may be compromised
    assert env["MODE"] == release_env(ctx, 2)["MODE"]


def test_a_rollback_never_shows_a_secret_as_a_config_var(
    client: TestClient, ctx: Context, org_a: Org
) -> None:
    deployed(client, ctx, org_a)
    secret = "s3cr3t-never-readable"
    r = client.post(
        "/v1/secrets", headers=org_a.h(), json={"name": "TOKEN", "value": secret, "app": "blog"}
    )
    assert r.status_code == 201, r.text
    assert set_config(client, org_a, {"X": "1"}) == 2  # TOKEN is a secret of v2
    # the secret goes, and its name comes back as a plain config var
    assert (
        client.delete("/v1/secrets/TOKEN", headers=org_a.h(), params={"app": "blog"}).status_code
        == 204
    )
    assert set_config(client, org_a, {"TOKEN": "public"}) == 3
    assert config(client, org_a) == {"TOKEN": "public", "X": "1"}

    # back to v2: its TOKEN was a secret (deleted since), never a config var
    rollback(client, org_a, 2)
    assert config(client, org_a) == {"X": "1"}
    assert "TOKEN" not in release_env(ctx, 4)
    # forward to v3: the config var comes back
    rollback(client, org_a, 3)
    assert config(client, org_a) == {"TOKEN": "public", "X": "1"}
    assert release_env(ctx, 5)["TOKEN"] == release_env(ctx, 3)["TOKEN"]

    # the other way round: the config var goes and a secret takes its name; a rollback to
    # v3 keeps the secret (it is not replaced by the old config var)
    assert set_config(client, org_a, {"TOKEN": None}) == 6
    r = client.post(
        "/v1/secrets", headers=org_a.h(), json={"name": "TOKEN", "value": secret, "app": "blog"}
    )
    assert r.status_code == 201, r.text
    rollback(client, org_a, 3)
    shown = config(client, org_a)
    assert shown == {"X": "1"}
    assert secret not in json.dumps(shown)
    secret_id = client.get("/v1/secrets/TOKEN", headers=org_a.h(), params={"app": "blog"}).json()[
        "id"
    ]
    assert release_env(ctx, 7)["TOKEN"] == (secret_id, 1)


def settle(ctx: Context) -> None:
    """Rollout passes, with the node reporting every instance healthy, until done."""
    for _ in range(3):
        rollout.pass_once(ctx)
        with ctx.db.session() as s:
            node = repo.find_all(s, Node)[0]
            rows = repo.find_all(s, Instance, desired_state=DesiredState.RUNNING.value)
        agents.heartbeat(
            ctx,
            node,
            agents.Heartbeat(
                instances=[
                    agents.ObservedInstance(instance_id=i.id, state="running", healthy=True)
                    for i in rows
                ]
            ),
        )
    rollout.pass_once(ctx)


def test_restart_and_config_changes_name_their_release_and_rollout(
    client: TestClient, ctx: Context, org_a: Org
) -> None:
    r = client.post("/v1/apps", headers=org_a.h(), json={"name": "early"})
    assert r.status_code == 201
    # before the first deploy a config change makes no release: no header
    r = client.patch("/v1/apps/early/config", headers=org_a.h(), json={"EARLY": "1"})
    assert (r.status_code, r.json()) == (200, {"EARLY": "1"})
    assert "ShellWeGo-Release" not in r.headers

    deployed(client, ctx, org_a)
    r = client.post("/v1/apps/blog/actions/restart", headers=org_a.h("member"))
    assert (r.status_code, r.json()) == (202, {"status": "restarting", "release": 1})
    settle(ctx)

    # the rollout of a release, followed: it has ended, so its outcome comes at once
    with client.stream("GET", "/v1/apps/blog/releases/1/rollout", headers=org_a.h("viewer")) as r:
        assert r.status_code == 200
        lines = [json.loads(raw) for raw in r.iter_lines() if raw]
    assert [(e["type"], e["status"]) for e in lines] == [
        ("deployment", "succeeded"),
        ("done", "succeeded"),
    ]
    restarts = client.get("/v1/apps/blog/deployments", headers=org_a.h()).json()["items"]
    assert lines[0]["id"] == max(d["id"] for d in restarts)  # the restart's, newest of v1
    r = client.get("/v1/apps/blog/releases/9/rollout", headers=org_a.h())
    assert (r.status_code, r.json()["detail"]) == (404, "release v9 of blog not found")
    r = client.get("/v1/apps/early/releases/1/rollout", headers=org_a.h())
    assert r.status_code == 404
