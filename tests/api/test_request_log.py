"""One log line per API request, and one per deploy step, as text or JSON; never a
secret (no query string, header or body)."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from shellwego.logconfig import DEPLOYS, REQUESTS, JsonFormatter, TextFormatter, configure
from shellwego.models import App
from shellwego.services import deployments
from shellwego.services.context import Context
from shellwego.store import repository as repo
from support.releases import slug_release

from .conftest import Org


def test_every_request_is_one_line_with_its_method_path_status_and_duration(
    client: TestClient, org_a: Org, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=REQUESTS)
    token = org_a.tokens["owner"]
    client.get("/v1/apps?limit=5&secret=s3cr3t", headers=org_a.h())
    client.post("/v1/apps", headers=org_a.h(), json={"name": "logged"})
    client.get("/v1/apps/nope", headers=org_a.h())
    mine = [r for r in caplog.records if r.name == REQUESTS and r.path.startswith("/v1/apps")]
    assert [(r.method, r.path, r.status) for r in mine] == [
        ("GET", "/v1/apps", 200),
        ("POST", "/v1/apps", 201),
        ("GET", "/v1/apps/nope", 404),
    ]
    assert all(isinstance(r.duration_ms, float) and r.duration_ms >= 0 for r in mine)
    text = "\n".join(TextFormatter().format(r) for r in mine)
    assert "s3cr3t" not in text and token not in text
    assert "method=POST path=/v1/apps status=201" in text


def test_a_deploy_step_is_logged_once_it_is_committed(
    ctx: Context, client: TestClient, org_a: Org, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=DEPLOYS)
    client.post("/v1/apps", headers=org_a.h(), json={"name": "web"})

    def deploy(then: str) -> None:
        with ctx.db.session() as s:
            app = repo.require(s, App, "app", name="web")
            release = slug_release(ctx, s, None, app, {"web": "serve"})
            deployments.start(ctx, s, None, app, release, reason="test")
            if then == "fail":
                raise RuntimeError("the transaction rolls back")

    with pytest.raises(RuntimeError):
        deploy("fail")
    assert [r for r in caplog.records if r.name == DEPLOYS] == []  # it never happened
    deploy("commit")
    [step] = [r for r in caplog.records if r.name == DEPLOYS]
    assert (step.app, step.event) == ("web", "deploy.started")
    assert step.getMessage().startswith("web: ")


def test_the_json_format_is_one_object_per_line_with_the_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": REQUESTS,
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "GET %s %d",
            "args": ("/v1/apps", 200),
        }
    )
    record.status = 200
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "GET /v1/apps 200"
    assert (entry["level"], entry["logger"], entry["status"]) == ("info", REQUESTS, 200)
    assert entry["time"].endswith("+00:00")


def test_unknown_formats_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure("xml")


def test_the_apis_address_answers_a_browser_with_a_page(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "shellwego login --api-url" in r.text and 'href="/docs"' in r.text
