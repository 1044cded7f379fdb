"""The edge controller on real database rows (both backends), loaded into a real Caddy:
which instances and hostnames are served, certificate state, the on-demand TLS "ask"."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from shellwego.api import create_app
from shellwego.controllers.edge import record_certificates
from shellwego.edge.process import CaddyProcess
from shellwego.edge.render import render, storage_root
from shellwego.models import DesiredState
from shellwego.services.context import Context
from shellwego.services.edges import route_table
from support.dns_server import DnsServer

from .realparts import Api, Backend, get, https_get
from .world import World


@pytest.fixture
def world(ctx: Context, api: Api, dns_server: DnsServer) -> World:
    return World(ctx, api, dns_server, node_address="127.0.0.1")


@pytest.fixture
def servers() -> Iterator[dict[str, Backend]]:
    """One real server per instance: each answers its own name, so a routed one shows."""
    made = {
        name: Backend(name)
        for name in ("healthy-1", "healthy-2", "unhealthy", "draining", "worker", "stopped")
    }
    made["idle"] = Backend("idle")
    yield made
    for b in made.values():
        b.close()


def port(backend: Backend) -> int:
    return int(backend.server.server_port)


async def test_only_healthy_non_draining_web_instances_and_verified_domains_are_served(
    world: World, servers: dict[str, Backend], caddy: CaddyProcess
) -> None:
    blog = world.app("blog")
    world.instance(blog, port(servers["healthy-1"]))
    world.instance(blog, port(servers["healthy-2"]))
    world.instance(blog, port(servers["unhealthy"]), healthy=False)
    world.instance(blog, port(servers["draining"]), draining=True)
    world.instance(blog, port(servers["worker"]), process_type="worker")
    world.instance(blog, port(servers["stopped"]), desired=DesiredState.STOPPED)
    world.domain("www.blog.example", "blog", verified=True)
    world.domain("pending.blog.example", "blog", verified=False)
    idle = world.app("idle")
    world.instance(idle, port(servers["idle"]))
    world.api.ok("POST", "/v1/apps/idle/actions/stop")

    table = route_table(world.ctx)
    by_name = {r.app_name: r for r in table.routes}
    assert by_name["blog"].app_id == blog[0]
    assert by_name["blog"].hostnames == ["blog.localhost", "www.blog.example"]
    assert [u.address for u in by_name["blog"].upstreams] == sorted(
        f"127.0.0.1:{port(servers[n])}" for n in ("healthy-1", "healthy-2")
    )
    assert (by_name["idle"].hostnames, by_name["idle"].upstreams) == (["idle.localhost"], [])

    await caddy.apply(table)
    async with httpx.AsyncClient(timeout=5) as client:
        seen = {(await get(caddy, "blog.localhost", client)).text for _ in range(12)}
        custom = {(await get(caddy, "www.blog.example", client)).text for _ in range(4)}
        pending = await get(caddy, "pending.blog.example", client)
        stopped = await get(caddy, "idle.localhost", client)
    assert seen == {"healthy-1", "healthy-2"}
    assert custom <= {"healthy-1", "healthy-2"} and custom
    assert pending.status_code == 404  # an unverified domain is not served
    assert stopped.status_code == 503 and "idle has no running instances" in stopped.text
    assert stopped.headers["Retry-After"] == "5"


async def test_certificate_state_is_recorded_for_active_domains(
    world: World, servers: dict[str, Backend], caddy: CaddyProcess
) -> None:
    blog = world.app("blog")
    world.instance(blog, port(servers["healthy-1"]))
    world.domain("blog.lan", "blog", verified=True)
    world.domain("later.lan", "blog", verified=False)
    await caddy.apply(route_table(world.ctx))
    answer = await asyncio.to_thread(https_get, caddy, "blog.lan")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"healthy-1")

    record_certificates(world.ctx, storage_root(caddy.settings))
    shown = world.api.ok("GET", "/v1/domains/blog.lan")
    assert shown["tls_status"] == "active"
    assert shown["certificate"]["managed_by"] == "internal"
    assert "Caddy Local Authority" in shown["certificate"]["issuer"]
    assert shown["certificate"]["not_after"]
    later = world.api.ok("GET", "/v1/domains/later.lan")
    assert (later["tls_status"], later["certificate"]) == ("pending", None)


def test_a_domain_reported_internal_is_exactly_one_served_by_the_internal_ca(
    world: World, caddy: CaddyProcess
) -> None:
    world.app("web")
    names = [
        "www.example.com",
        "nas.home.arpa",
        "printer.lan",
        "box.local",
        "app.test",
        "svc.internal",
        "shop.example.org",
    ]
    reported = {n: world.domain(n, "web", verified=True)["tls_status"] for n in names}
    config = render(route_table(world.ctx), caddy.settings)
    policies = config["apps"]["tls"]["automation"]["policies"]
    internal = {
        name
        for p in policies
        if p["issuers"] == [{"module": "internal"}]
        for name in p["subjects"]
    }
    acme = {name for p in policies if p["issuers"][0]["module"] == "acme" for name in p["subjects"]}
    assert {n for n, status in reported.items() if status == "internal"} == internal - {
        "web.localhost"
    }
    assert {n for n, status in reported.items() if status == "acme"} == acme
    assert acme == {"www.example.com", "shop.example.org"}


def test_the_ask_endpoint_allows_platform_hosts_and_active_domains_only(
    world: World, ctx: Context
) -> None:
    world.app("blog")
    world.app("idle")
    world.api.ok("POST", "/v1/apps/idle/actions/stop")
    world.domain("www.blog.example", "blog", verified=True)
    world.domain("pending.blog.example", "blog", verified=False)
    app = create_app(ctx)
    with TestClient(app, client=("127.0.0.1", 40000)) as local:

        def ask(name: str) -> int:
            return local.get("/v1/edge/ask", params={"domain": name}).status_code

        assert ask("blog.localhost") == 200
        assert ask("BLOG.localhost.") == 200
        assert ask("www.blog.example") == 200
        assert ask("idle.localhost") == 200  # stopped, still the platform's: it shows a 503
        assert ask("pending.blog.example") == 404
        assert ask("nobody.localhost") == 404
        assert ask("www.blog.localhost") == 404
        assert ask("elsewhere.example") == 404
        assert local.get("/v1/edge/ask").status_code == 422
    with TestClient(app, client=("203.0.113.9", 40000)) as remote:
        r = remote.get("/v1/edge/ask", params={"domain": "blog.localhost"})
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"



async def test_a_deleted_apps_hostnames_answer_404_at_once_and_get_no_certificates(
    world: World, servers: dict[str, Backend], caddy: CaddyProcess, ctx: Context
) -> None:
    blog = world.app("blog")
    world.instance(blog, port(servers["healthy-1"]))
    world.domain("www.blog.example", "blog", verified=True)
    await caddy.apply(route_table(world.ctx))
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await get(caddy, "blog.localhost", client)).text == "healthy-1"
        assert (await get(caddy, "www.blog.example", client)).text == "healthy-1"

        world.api.ok("DELETE", "/v1/apps/blog")
        table = route_table(world.ctx)
        assert [r for r in table.routes if r.app_id == blog[0]] == []
        await caddy.apply(table)
        for host in ("blog.localhost", "www.blog.example"):
            assert (await get(caddy, host, client)).status_code == 404, host
    with TestClient(create_app(ctx), client=("127.0.0.1", 40000)) as local:
        for host in ("blog.localhost", "www.blog.example"):
            assert local.get("/v1/edge/ask", params={"domain": host}).status_code == 404
