"""The API contract's rules, one by one, on SQLite and PostgreSQL: numbers no column holds
are invalid input (never a 500), 405s name the allowed methods, every operation declares
its errors as problem+json, fields take the JSON types their schema names, and the
schema states what the server refuses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.conftest import row_counts
from shellwego.api import create_app
from shellwego.errors import InvalidInput
from shellwego.models import ActorType, App, AuditLog, new_id
from shellwego.services import auth
from shellwego.services.context import Context
from shellwego.store import repository as repo
from support.releases import slug_release

PROBLEM = "application/problem+json"
PASSWORD = "correct horse battery staple"
MUTATING = {"post", "put", "patch", "delete"}


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def owner(client: TestClient, ctx: Context) -> dict[str, str]:
    """The owner's headers; their organization has the app ``web`` with release v1 and
    the secret ``API_KEY``."""
    r = client.post(
        "/v1/bootstrap",
        json={
            "user": {"email": "owner@t.example", "password": PASSWORD},
            "organization": {"name": "T", "slug": "t"},
        },
    )
    assert r.status_code == 201, r.text
    token = r.json()["token"]["token"]
    h = {"Authorization": f"Bearer {token}"}
    assert client.post("/v1/apps", headers=h, json={"name": "web"}).status_code == 201
    r = client.post("/v1/secrets", headers=h, json={"name": "API_KEY", "value": "k", "app": "web"})
    assert r.status_code == 201, r.text
    who = auth.authenticate(ctx, token)
    with ctx.db.session() as s:
        slug_release(ctx, s, who, repo.require(s, App, "app", name="web"), {"web": "x"})
    return h


def problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    return body


def test_numbers_no_column_holds_are_invalid_input(
    client: TestClient, ctx: Context, owner: dict[str, str]
) -> None:
    before = row_counts(ctx)
    # past 64 bits (SQLite's OverflowError), past the 32-bit column (PostgreSQL), below 1
    for version in (2**63, 2**64, 2**31, 0, -1, -(2**63) - 1):
        r = client.get(f"/v1/apps/web/releases/{version}", headers=owner)
        assert problem(r, 422)["errors"][0]["loc"] == ["path", "version"]
        r = client.post("/v1/apps/web/rollback", headers=owner, json={"version": version})
        assert problem(r, 422)["errors"][0]["loc"] == ["body", "version"]
        r = client.post(f"/v1/secrets/API_KEY/reveal?app=web&version={version}", headers=owner)
        assert problem(r, 422)["errors"][0]["loc"] == ["query", "version"]
    for replicas in (2**63, 2**31, 101, -1):
        r = client.post("/v1/apps/web/scale", headers=owner, json={"replicas": replicas})
        assert problem(r, 422)["errors"][0]["loc"] == ["body", "replicas"]
    assert row_counts(ctx) == before
    # the largest version a column holds is looked up: a plain 404
    problem(client.get(f"/v1/apps/web/releases/{2**31 - 1}", headers=owner), 404)
    assert client.get("/v1/apps/web/releases/1", headers=owner).status_code == 200


def test_the_store_refuses_a_number_no_column_holds_and_rolls_back(ctx: Context) -> None:
    """The guard behind the declared bounds: SQLite overflows past 64 bits, PostgreSQL
    past the column's width; either way the unit of work is invalid input, undone."""
    now = datetime.now(UTC)
    entry = AuditLog(
        id=new_id(),
        created_at=now,
        updated_at=now,
        actor_type=ActorType.SYSTEM,
        action="contract.test",
        target_type="platform",
        result="success",
        status_code=2**63,
    )
    with pytest.raises(InvalidInput, match="out of range"), ctx.db.session() as s:
        s.add(entry)
    with ctx.db.session() as s:
        assert repo.find_all(s, AuditLog, action="contract.test") == []


def test_a_405_names_every_method_the_path_answers(client: TestClient) -> None:
    for method, path, allowed in (
        ("PUT", "/v1/apps/web", "DELETE, GET, PATCH"),
        ("TRACE", "/v1/apps", "GET, POST"),
        ("DELETE", "/health", "GET"),
        ("GET", "/v1/auth/token", "DELETE, POST"),
    ):
        r = client.request(method, path)
        body = problem(r, 405)
        assert r.headers["allow"] == allowed, (path, r.headers)
        assert body["type"].endswith("/http-405")


def _schema(client: TestClient) -> dict[str, Any]:
    schema: dict[str, Any] = client.get("/openapi.json").json()
    return schema


def test_every_operation_declares_its_errors_as_problems(client: TestClient) -> None:
    schema = _schema(client)
    components = schema["components"]["schemas"]
    assert {"type", "title", "status", "detail", "instance"} <= set(
        components["Problem"]["required"]
    )
    assert "HTTPValidationError" not in components  # FastAPI's own 422 shape is not used
    operations = [
        (path, method, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if method in {"get", "put", "post", "patch", "delete"}
    ]
    assert len(operations) > 60
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        responses = {int(status): response for status, response in op["responses"].items()}
        errors = {status: r for status, r in responses.items() if status >= 400}
        if path != "/health":
            assert errors, where
        for status, response in errors.items():
            assert response["content"] == {
                PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}
            }, (where, status)
        if op.get("security"):
            assert 401 in errors, where
            assert errors[401]["headers"]["WWW-Authenticate"]["required"] is True
        if any("apiToken" in requirement for requirement in op.get("security", [])):
            assert 403 in errors, where
        if any(p["in"] == "path" for p in op.get("parameters", [])):
            assert 404 in errors, where
        if "requestBody" in op:
            assert {413, 422} <= set(errors), where
        if method in MUTATING:
            assert {409, 422} <= set(errors), where


def test_error_bodies_are_the_declared_problem(client: TestClient, owner: dict[str, str]) -> None:
    declared = _schema(client)["components"]["schemas"]["Problem"]["properties"]
    for r in (
        client.get("/v1/apps/nope", headers=owner),
        client.get("/v1/apps"),
        client.post("/v1/apps", headers=owner, json={"name": 5}),
        client.post("/v1/apps/web/actions/restart", headers={"Authorization": "Bearer swg_x"}),
    ):
        body = r.json()
        assert r.headers["content-type"] == PROBLEM
        assert set(body) <= set(declared), body
        assert isinstance(body["status"], int) and body["type"].startswith("https://")


def test_expires_at_is_a_date_time_string_with_its_offset(
    client: TestClient, ctx: Context, owner: dict[str, str]
) -> None:
    before = row_counts(ctx)
    for bad in (1893456000, 1893456000.5, "1893456000", "2030-01-01T00:00:00", "2030-01-01", True):
        r = client.post("/v1/user/tokens", headers=owner, json={"name": "ci", "expires_at": bad})
        assert problem(r, 422)["errors"][0]["loc"] == ["body", "expires_at"], bad
        r = client.post(
            "/v1/secrets", headers=owner, json={"name": "S", "value": "v", "expires_at": bad}
        )
        assert problem(r, 422)["errors"][0]["loc"] == ["body", "expires_at"], bad
    assert row_counts(ctx) == before
    r = client.post(
        "/v1/user/tokens",
        headers=owner,
        json={"name": "ci", "expires_at": "2030-01-01T02:00:00+02:00"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["expires_at"] == "2030-01-01T00:00:00Z"
    field = _schema(client)["components"]["schemas"]["ApiTokenCreate"]["properties"]["expires_at"]
    assert {"type": "string", "format": "date-time"} in field["anyOf"]


def test_bodies_take_the_json_types_their_schema_names(
    client: TestClient, ctx: Context, owner: dict[str, str]
) -> None:
    before = row_counts(ctx)
    for path, body in (
        ("/v1/apps/web/scale", {"replicas": False}),
        ("/v1/apps/web/scale", {"replicas": "2"}),
        ("/v1/apps/web/rollback", {"version": "1"}),
        ("/v1/apps/web/run", {"command": ["true"], "timeout": True}),
    ):
        problem(client.post(path, headers=owner, json=body), 422)
    for body in (
        {"redirect_https": 1},
        {"redirect_https": "true"},
        {"deploy": {"surge": True}},
        {"health_check": {"timeout_seconds": "5"}},
    ):
        problem(client.patch("/v1/apps/web", headers=owner, json=body), 422)
    for body in ({"web": True}, {"web": "2"}, {"web": {"count": False}}):
        problem(client.patch("/v1/apps/web/formation", headers=owner, json=body), 422)
    # a body that is not even text (not UTF-8) is as invalid as malformed JSON
    r = client.post(
        "/v1/apps", headers={**owner, "content-type": "application/json"}, content=b"\xff\xfe{"
    )
    assert problem(r, 422)["errors"] == [
        {"loc": ["body"], "msg": "not valid JSON", "type": "json_invalid"}
    ]
    assert row_counts(ctx) == before
    # an integer written 2.0 is still a JSON Schema integer
    r = client.post("/v1/apps/web/scale", headers=owner, json={"replicas": 2.0})
    assert r.status_code == 200, r.text
    assert r.json()["web"]["count"] == 2


def _request_schemas(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema a request body can reach, named by where it is."""
    components = schema["components"]["schemas"]
    seen: set[str] = set()

    def walk(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref:
                name = ref.rsplit("/", 1)[-1]
                if name not in seen:
                    seen.add(name)
                    yield from walk(components[name], name)
                return
            if node.get("type") == "object":
                yield where, node
            for key, value in node.items():
                yield from walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, where)

    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                yield from walk(op["requestBody"], f"{method.upper()} {path}")


def test_request_bodies_declare_which_keys_they_take(client: TestClient) -> None:
    """No free-form object a request sends: the schema names the keys (properties) or
    their pattern (patternProperties, then no others); an object with neither takes
    any value (the agent protocol's forward-compatible shapes ignore unknown keys)."""
    for where, node in _request_schemas(_schema(client)):
        if "patternProperties" in node:
            assert node["additionalProperties"] is False, where
        elif "properties" not in node:
            assert isinstance(node.get("additionalProperties"), dict), where


def test_config_and_formation_take_what_their_schema_says(
    client: TestClient, owner: dict[str, str]
) -> None:
    r = client.patch("/v1/apps/web/config", headers=owner, json={"A_B": "1", "_C": ""})
    assert r.status_code == 200, r.text
    assert r.json() == {"A_B": "1", "_C": ""}
    r = client.patch(
        "/v1/apps/web/formation",
        headers=owner,
        json={"web": 0, "worker": {"size": "large"}, "clock": {}},
    )
    assert r.status_code == 200, r.text
    assert {k: (v["count"], v["size"]) for k, v in r.json().items()} == {
        "web": (0, "small"),
        "worker": (0, "large"),
        "clock": (0, "small"),
    }
    for body in ({"1BAD": "x"}, {"web-x": "x"}, {}):
        problem(client.patch("/v1/apps/web/config", headers=owner, json=body), 422)
    for body in ({"Web": 1}, {"web": {"size": "huge"}}, {"web": 101}, {}):
        problem(client.patch("/v1/apps/web/formation", headers=owner, json=body), 422)


def test_what_the_state_refuses_is_a_conflict_not_invalid_input(
    client: TestClient, ctx: Context, owner: dict[str, str]
) -> None:
    assert client.post("/v1/apps", headers=owner, json={"name": "fresh"}).status_code == 201
    for action in ("restart", "start"):
        r = client.post(f"/v1/apps/fresh/actions/{action}", headers=owner)
        assert problem(r, 409)["detail"] == "app fresh has nothing deployed yet"
    r = client.post("/v1/apps/fresh/run", headers=owner, json={"command": ["true"]})
    problem(r, 409)
    placement = {"placement": {"constraints": {"region": "eu"}}}
    r = client.patch("/v1/apps/fresh", headers=owner, json=placement)
    assert problem(r, 409)["type"].endswith("/insufficient-capacity")
    # renaming onto a taken name while the constraints change: a conflict, not a 500
    before = row_counts(ctx)
    r = client.patch("/v1/apps/fresh", headers=owner, json={"name": "web", **placement})
    assert problem(r, 409)["type"].endswith("/conflict")
    assert row_counts(ctx) == before
    assert client.get("/v1/apps/fresh", headers=owner).json()["placement"]["constraints"] == {}


def test_the_schema_states_which_email_addresses_are_refused(client: TestClient) -> None:
    field = _schema(client)["components"]["schemas"]["LoginIn"]["properties"]["email"]
    assert field["format"] == "email"
    pattern = re.compile(field["pattern"])
    for refused in ("a@b.test", "a@x.LOCAL", "a@localhost", "a@b.onion", "a@x.invalid"):
        assert not pattern.match(refused), refused
        r = client.post("/v1/auth/token", json={"email": refused, "password": PASSWORD})
        assert problem(r, 422)["errors"][0]["loc"] == ["body", "email"], refused
    for taken in ("a@b.example", "x.y+z@test.example.com", "a@testing.io"):
        assert pattern.match(taken), taken
        problem(client.post("/v1/auth/token", json={"email": taken, "password": PASSWORD}), 401)


def test_the_config_body_values_stay_secret_in_errors(
    client: TestClient, ctx: Context, owner: dict[str, str]
) -> None:
    """A refused config body never echoes a value back (they may be secrets)."""
    r = client.patch("/v1/apps/web/config", headers=owner, json={"OK": "s3cret", "1BAD": "x"})
    assert "s3cret" not in problem(r, 422)["detail"] and "s3cret" not in r.text


def test_text_postgresql_cannot_store_is_invalid_input_not_a_server_error(
    client: TestClient, ctx: Context, owner: dict[str, str], backend: str
) -> None:
    """PostgreSQL text cannot hold a NUL character; SQLite stores it. Either way the
    request gets an answer, never a 500, and a refused one changes nothing."""
    before = row_counts(ctx)
    created = client.post("/v1/organizations", headers=owner, json={"name": "a\x00b", "slug": "n"})
    found = client.get("/v1/apps/a%00b", headers=owner)
    if backend == "postgres":
        assert problem(created, 422)["detail"] == "text in the request contains a NUL character"
        problem(found, 422)
        assert row_counts(ctx) == before
    else:
        assert created.status_code == 201, created.text
        problem(found, 404)
