"""An unverified custom domain does not reserve its hostname forever: a pending claim
expires (``SHELLWEGO_DOMAIN_PENDING_TTL``, 7 days by default) and another organization
may then add the hostname. Both backends, time moved by the injected clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from shellwego.clock import FrozenClock
from shellwego.controllers import loops
from shellwego.errors import ConfigError
from shellwego.services.context import Context
from shellwego.settings import Settings

from .conftest import PASSWORD, Connect, bootstrap

WEEK = 7 * 24 * 3600
HOST = "www.example.com"


class Tenants:
    """Two organizations with an app each: ``acme`` (app ``blog``), ``rival`` (``shop``)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.acme = bootstrap(client)
        r = client.post("/v1/organizations", headers=self.acme, json={"name": "R", "slug": "rival"})
        assert r.status_code == 201, r.text
        r = client.post(
            "/v1/auth/token",
            json={"email": "owner@example.com", "password": PASSWORD, "organization": "rival"},
        )
        assert r.status_code == 201, r.text
        self.rival = {"Authorization": f"Bearer {r.json()['token']}"}
        for h, app in ((self.acme, "blog"), (self.rival, "shop")):
            assert client.post("/v1/apps", headers=h, json={"name": app}).status_code == 201

    def add(self, h: dict[str, str], app: str, host: str = HOST) -> tuple[int, dict[str, object]]:
        r = self.client.post("/v1/domains", headers=h, json={"hostname": host, "app": app})
        return r.status_code, r.json()

    def hosts(self, h: dict[str, str]) -> list[str]:
        return [d["hostname"] for d in self.client.get("/v1/domains", headers=h).json()["items"]]

    def events(self, h: dict[str, str], app: str) -> list[dict[str, object]]:
        r = self.client.get(f"/v1/apps/{app}/events", headers=h)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])


@pytest.fixture
def tenants(connect: Connect) -> Tenants:
    return Tenants(connect("198.51.100.7"))


def _at(value: object) -> datetime:
    return datetime.fromisoformat(str(value))


def test_a_pending_domain_says_when_it_expires(tenants: Tenants) -> None:
    status, made = tenants.add(tenants.acme, "blog")
    assert status == 201 and made["status"] == "pending"
    assert _at(made["expires_at"]) == _at(made["created_at"]) + timedelta(seconds=WEEK)
    shown = tenants.client.get(f"/v1/domains/{HOST}", headers=tenants.acme).json()
    listed = tenants.client.get("/v1/domains", headers=tenants.acme).json()["items"]
    assert shown["expires_at"] == listed[0]["expires_at"] == made["expires_at"]


def test_an_expired_pending_claim_is_freed_for_another_organization(
    tenants: Tenants, clock: FrozenClock
) -> None:
    assert tenants.add(tenants.acme, "blog")[0] == 201
    status, body = tenants.add(tenants.rival, "shop")
    assert status == 409, body
    clock.advance(WEEK - 1)
    assert tenants.add(tenants.rival, "shop")[0] == 409
    clock.advance(1)
    status, body = tenants.add(tenants.rival, "shop")
    assert status == 201, body
    assert body["organization_id"] != tenants.client.get(
        "/v1/organizations/acme", headers=tenants.acme
    ).json()["id"]
    # the stale claim went in the same transaction; its organization is told why
    assert tenants.hosts(tenants.acme) == []
    assert tenants.client.get(f"/v1/domains/{HOST}", headers=tenants.acme).status_code == 404
    expired = [e for e in tenants.events(tenants.acme, "blog") if e["type"] == "domain.expired"]
    assert len(expired) == 1 and HOST in str(expired[0]["message"])
    assert tenants.hosts(tenants.rival) == [HOST]


def test_a_verified_domain_never_expires(
    tenants: Tenants, clock: FrozenClock, ctx: Context
) -> None:
    ctx.resolver = lambda kind, name: (
        [f"blog.{ctx.settings.base_domain}"] if kind == "CNAME" and name == HOST else []
    )
    assert tenants.add(tenants.acme, "blog")[0] == 201
    r = tenants.client.post(f"/v1/domains/{HOST}/actions/verify", headers=tenants.acme)
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    assert r.json()["expires_at"] is None
    clock.advance(5 * WEEK)
    loops.housekeeping_pass(ctx)
    assert tenants.add(tenants.rival, "shop")[0] == 409
    assert tenants.hosts(tenants.acme) == [HOST]


def test_the_sweep_deletes_expired_pending_domains_and_records_an_event(
    tenants: Tenants, clock: FrozenClock, ctx: Context
) -> None:
    assert tenants.add(tenants.acme, "blog", "old.example.com")[0] == 201
    clock.advance(WEEK / 2)
    assert tenants.add(tenants.acme, "blog", "new.example.com")[0] == 201
    loops.housekeeping_pass(ctx)
    assert tenants.hosts(tenants.acme) == ["old.example.com", "new.example.com"]
    clock.advance(WEEK / 2)
    loops.housekeeping_pass(ctx)
    assert tenants.hosts(tenants.acme) == ["new.example.com"]
    events = tenants.events(tenants.acme, "blog")
    expired = [e for e in events if e["type"] == "domain.expired"]
    assert [e["data"] for e in expired] == [{"hostname": "old.example.com"}]
    assert "old.example.com" in str(expired[0]["message"])
    # a second pass finds nothing more to do
    loops.housekeeping_pass(ctx)
    again = tenants.events(tenants.acme, "blog")
    assert len([e for e in again if e["type"] == "domain.expired"]) == 1


async def test_the_housekeeping_loop_runs_the_sweep(
    tenants: Tenants, clock: FrozenClock, ctx: Context
) -> None:
    import asyncio

    assert tenants.add(tenants.acme, "blog")[0] == 201
    clock.advance(WEEK)
    stop = asyncio.Event()
    task = asyncio.create_task(loops.housekeeping_loop(ctx, stop, interval=0.05))
    try:
        for _ in range(200):
            if not tenants.hosts(tenants.acme):
                break
            await asyncio.sleep(0.05)
        assert tenants.hosts(tenants.acme) == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def test_the_pending_ttl_is_configurable(tenants: Tenants, ctx: Context) -> None:
    ctx.settings = replace(ctx.settings, domain_pending_ttl=3600.0)
    status, made = tenants.add(tenants.acme, "blog")
    assert status == 201
    assert _at(made["expires_at"]) == _at(made["created_at"]) + timedelta(hours=1)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("7d", WEEK), ("12h", 43200), ("90m", 5400), ("45s", 45), ("3600", 3600), ("1d12h", 129600)],
)
def test_the_pending_ttl_reads_seconds_or_a_duration(raw: str, seconds: int) -> None:
    settings = Settings.from_env({"SHELLWEGO_DOMAIN_PENDING_TTL": raw})
    assert settings.domain_pending_ttl == seconds


def test_the_pending_ttl_defaults_to_a_week() -> None:
    assert Settings.from_env({}).domain_pending_ttl == WEEK


@pytest.mark.parametrize("raw", ["soon", "0", "-5", "7x", "", "d"])
def test_a_bad_pending_ttl_is_refused_in_one_line(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SHELLWEGO_DOMAIN_PENDING_TTL": raw})
    assert "SHELLWEGO_DOMAIN_PENDING_TTL" in str(caught.value)
    assert "\n" not in str(caught.value)
