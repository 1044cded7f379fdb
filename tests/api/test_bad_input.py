"""Bad input on every resource: unknown fields, wrong types, nulls where a value is
required, bodies too large (declared or streamed) and names differing only in case.
Each gets a clear 4xx problem+json, and nothing in the database changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

from shellwego.services.context import Context

from .conftest import PASSWORD, Org, row_counts

LIMIT = 1024 * 1024  # the default request body limit


def _problem(r: Any, status: int, what: object) -> dict[str, Any]:
    assert r.status_code == status, (what, r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json", what
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    return body


def _stream(body: dict[str, Any], pad_to: int) -> Iterator[bytes]:
    """``body`` as JSON, padded with spaces to ``pad_to`` bytes, sent in chunks (no
    Content-Length: the server only finds out the size as it reads)."""
    text = json.dumps(body).encode()
    yield text[:-1]
    padding = pad_to - len(text)
    while padding > 0:
        chunk = min(padding, 64 * 1024)
        yield b" " * chunk
        padding -= chunk
    yield text[-1:]


def _oversized(
    client: TestClient, ctx: Context, method: str, path: str, h: dict[str, str], body: Any
) -> None:
    """``body`` padded past the limit: 413 whether its size is declared or streamed."""
    headers = {**h, "content-type": "application/json"}
    before = row_counts(ctx)
    big = json.dumps(body).encode()
    big = big[:-1] + b" " * (LIMIT + 1 - len(big)) + big[-1:]
    r = client.request(method, path, headers=headers, content=big)
    problem = _problem(r, 413, (path, "declared"))
    assert problem["type"].endswith("/payload-too-large")
    assert f"{LIMIT} bytes" in problem["detail"]
    r = client.request(method, path, headers=headers, content=_stream(body, LIMIT + 1))
    assert "content-length" not in r.request.headers
    problem = _problem(r, 413, (path, "chunked"))
    assert problem["type"].endswith("/payload-too-large")
    assert row_counts(ctx) == before, path
    # the same body just under the limit is read (and then judged on what it says)
    r = client.request(method, path, headers=headers, content=_stream(body, LIMIT - 10))
    assert r.status_code < 300, (path, r.text)


# resource → (method, path, a valid body, bodies refused with 422)
CASES: dict[str, tuple[str, str, dict[str, Any], list[dict[str, Any]]]] = {
    "domains": (
        "POST",
        "/v1/domains",
        {"hostname": "www.ok.example", "app": "web"},
        [
            {"hostname": "www.ok.example", "app": "web", "extra": 1},
            {"hostname": 5, "app": "web"},
            {"hostname": ["a"], "app": "web"},
            {"hostname": None, "app": "web"},
            {"hostname": "not a host", "app": "web"},
            {"app": "web"},
        ],
    ),
    "secrets": (
        "POST",
        "/v1/secrets",
        {"name": "NEW_KEY", "value": "v", "app": "web"},
        [
            {"name": "NEW_KEY", "value": "v", "app": "web", "scope": "x"},
            {"name": "NEW_KEY", "value": 5, "app": "web"},
            {"name": "NEW_KEY", "value": None, "app": "web"},
            {"name": "1BAD", "value": "v"},
            {"name": "NEW_KEY", "value": "v" * 65537},
            {"name": "NEW_KEY"},
        ],
    ),
    "secret versions": (
        "POST",
        "/v1/secrets/API_KEY/versions?app=web",
        {"value": "v2"},
        [{"value": "v2", "version": 3}, {"value": 2}, {"value": None}, {}],
    ),
    "config": (
        "PATCH",
        "/v1/apps/web/config",
        {"NEW_VAR": "1"},
        [{"1BAD": "x"}, {"OK": 5}, {"OK": ["x"]}, {"OK": {"a": 1}}, {"OK": "x" * 65537}, {}],
    ),
    "tokens": (
        "POST",
        "/v1/user/tokens",
        {"name": "ci"},
        [
            {"name": "ci", "scopes": ["all"]},
            {"name": 5},
            {"name": None},
            {"name": ""},
            {"name": "ci", "expires_at": "tomorrow"},
        ],
    ),
    "members": (
        "POST",
        "/v1/organizations/org-a/members",
        {"email": "new@a.example", "role": "member", "password": PASSWORD},
        [
            {"email": "new@a.example", "role": "member", "password": PASSWORD, "admin": True},
            {"email": "not an email", "role": "member", "password": PASSWORD},
            {"email": "new@a.example", "role": "emperor", "password": PASSWORD},
            {"email": "new@a.example", "role": "member", "password": "short"},
            {"email": "new@a.example", "role": "member", "password": None},
            {"email": None, "role": "member"},
        ],
    ),
    "member roles": (
        "PATCH",
        "/v1/organizations/org-a/members/viewer@a.example",
        {"role": "member"},
        [{"role": "emperor"}, {"role": None}, {"role": 3}, {"role": "member", "email": "x@y.z"}],
    ),
    "apps": (
        "PATCH",
        "/v1/apps/web",
        {"redirect_https": True},
        [
            {"name": None},
            {"health_check": None},
            {"redirect_https": None},
            {"runtime": None},
            {"redirect_https": "sometimes"},
            {"name": "bad name!"},
            {"owner": "me"},
        ],
    ),
    "formation": (
        "PATCH",
        "/v1/apps/web/formation",
        {"web": 2},
        [{"web": None}, {"web": {"count": None}}, {"web": "two"}, {"web": -1}, {}],
    ),
}


def _seed(client: TestClient, org_a: Org) -> None:
    h = org_a.h()
    assert client.post("/v1/apps", headers=h, json={"name": "web"}).status_code == 201
    assert client.patch("/v1/apps/web/config", headers=h, json={"DEBUG": "1"}).status_code == 200
    r = client.post("/v1/secrets", headers=h, json={"name": "API_KEY", "value": "k", "app": "web"})
    assert r.status_code == 201
    r = client.post("/v1/domains", headers=h, json={"hostname": "www.web.example", "app": "web"})
    assert r.status_code == 201


def test_bad_bodies_are_refused_and_change_nothing(
    client: TestClient, ctx: Context, org_a: Org
) -> None:
    _seed(client, org_a)
    h = org_a.h()
    seen = client.get("/v1/apps/web", headers=h).json()
    before = row_counts(ctx)
    for resource, (method, path, _valid, bad_bodies) in CASES.items():
        for body in bad_bodies:
            r = client.request(method, path, headers=h, json=body)
            problem = _problem(r, 422, (resource, body))
            assert "v" * 100 not in r.text and "x" * 100 not in r.text  # inputs never echoed
            assert problem["type"].endswith("/invalid-input"), problem
        r = client.request(
            method, path, headers={**h, "content-type": "application/json"}, content=b"{nope"
        )
        _problem(r, 422, (resource, "malformed JSON"))
        assert row_counts(ctx) == before, resource
    assert client.get("/v1/apps/web", headers=h).json() == seen


def test_null_for_a_required_field_names_the_field(client: TestClient, org_a: Org) -> None:
    _seed(client, org_a)
    r = client.patch("/v1/apps/web", headers=org_a.h(), json={"name": None})
    problem = _problem(r, 422, "null name")
    assert problem["detail"] == "name: may not be null; leave the field out instead"
    assert "None" not in problem["detail"] and "already" not in problem["detail"]
    # a field left out keeps its value; a nullable field may be set to null
    r = client.patch("/v1/apps/web", headers=org_a.h(), json={})
    assert r.status_code == 200 and r.json()["name"] == "web"
    r = client.patch("/v1/organizations/org-a/members/viewer@a.example", headers=org_a.h(), json={})
    assert r.status_code == 200 and r.json()["role"] == "viewer"


def test_bodies_too_large_are_refused_declared_or_streamed(
    client: TestClient, ctx: Context, org_a: Org
) -> None:
    _seed(client, org_a)
    for method, path, valid, _bad in CASES.values():
        _oversized(client, ctx, method, path, org_a.h(), valid)
    _oversized(client, ctx, "POST", "/v1/apps", org_a.h(), {"name": "big"})


def test_names_differing_only_in_case_are_one_name(
    client: TestClient, ctx: Context, org_a: Org
) -> None:
    _seed(client, org_a)
    h = org_a.h()
    before = row_counts(ctx)
    duplicates = [
        ("POST", "/v1/apps", {"name": "WEB"}),
        ("POST", "/v1/domains", {"hostname": "WWW.Web.Example", "app": "web"}),
        ("POST", "/v1/secrets", {"name": "api_key", "value": "k2", "app": "web"}),
        ("PATCH", "/v1/apps/web/config", {"debug": "2"}),
        ("PATCH", "/v1/apps/web/config", {"FRESH": "1", "fresh": "2"}),
        ("POST", "/v1/organizations/org-a/members", {"email": "VIEWER@a.example", "role": "admin"}),
        ("POST", "/v1/organizations", {"name": "Again", "slug": "ORG-A"}),
    ]
    for method, path, body in duplicates:
        r = client.request(method, path, headers=h, json=body)
        problem = _problem(r, 409, (path, body))
        assert problem["type"].endswith("/conflict")
        assert "k2" not in r.text
    assert row_counts(ctx) == before
    assert client.get("/v1/apps/web/config", headers=h).json() == {"DEBUG": "1"}
    # the stored spelling is the one found, whatever the case asked for
    assert client.get("/v1/apps/WEB", headers=h).json()["name"] == "web"
    r = client.get("/v1/secrets/api_key", headers=h, params={"app": "web"})
    assert r.json()["name"] == "API_KEY"
    # a deleted name is free again, in the case now given
    assert client.patch("/v1/apps/web/config", headers=h, json={"DEBUG": None}).is_success
    assert client.patch("/v1/apps/web/config", headers=h, json={"debug": "3"}).is_success
    assert client.get("/v1/apps/web/config", headers=h).json() == {"debug": "3"}
