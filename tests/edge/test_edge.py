"""The edge with a real Caddy: routing, balancing, TLS, clear answers, resilience."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from shellwego.edge.certificates import certificate_for
from shellwego.edge.metrics import traffic_for_app
from shellwego.edge.process import CaddyProcess
from shellwego.edge.render import is_local_name, render, storage_root
from shellwego.edge.routes import AppRoute, EdgeSettings, RouteTable, Upstream
from support.load import Load


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Backend:
    """A small threaded HTTP server answering its own name."""

    def __init__(self, name: str) -> None:
        body = name.encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def upstream(self) -> Upstream:
        return Upstream(address=f"127.0.0.1:{self.server.server_port}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    made = {name: Backend(name) for name in ("A", "B")}
    yield made
    for b in made.values():
        b.close()


def settings_for(data: Path, **over: object) -> EdgeSettings:
    base = EdgeSettings(
        http_port=free_port(),
        https_port=free_port(),
        admin_socket=data / "admin.sock",
        base_domain="localhost",
        acme_email=None,
        acme_ca=None,
        acme_staging=False,
        ask_url="http://127.0.0.1:8400/v1/edge/ask",
        data_dir=data,
    )
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


@pytest.fixture
async def caddy(tmp_path: Path) -> AsyncIterator[CaddyProcess]:
    proc = CaddyProcess(settings_for(tmp_path / "caddy"))
    await proc.start()
    yield proc
    await proc.stop()


def route(name: str, *upstreams: Upstream, **kw: object) -> AppRoute:
    return AppRoute(
        app_id=f"id-{name}",
        app_name=name,
        hostnames=[f"{name}.localhost", *kw.pop("extra", [])],  # type: ignore[list-item]
        upstreams=list(upstreams),
        **kw,  # type: ignore[arg-type]
    )


async def get(
    caddy: CaddyProcess, host: str, client: httpx.AsyncClient | None = None
) -> httpx.Response:
    url = f"http://127.0.0.1:{caddy.settings.http_port}/"
    if client is not None:
        return await client.get(url, headers={"Host": host})
    async with httpx.AsyncClient(timeout=5) as c:
        return await c.get(url, headers={"Host": host})


# -- the pure renderer ----------------------------------------------------------------------


def test_render_routes_hosts_to_upstreams_with_retries_and_fallbacks(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    table = RouteTable(
        [
            route(
                "blog", Upstream("127.0.0.1:20001"), Upstream("127.0.0.1:20002"), health_path="/up"
            ),
            route("idle"),
        ]
    )
    config = render(table, s)
    assert config["admin"]["listen"] == f"unix/{s.admin_socket}"
    https = config["apps"]["http"]["servers"]["https"]["routes"]
    assert https[0]["match"] == [{"host": ["blog.localhost"]}]
    proxy = https[0]["handle"][0]
    assert proxy["handler"] == "reverse_proxy"
    assert [u["dial"] for u in proxy["upstreams"]] == ["127.0.0.1:20001", "127.0.0.1:20002"]
    assert proxy["load_balancing"]["try_duration"]
    assert proxy["health_checks"]["active"]["uri"] == "/up"
    idle = https[1]["handle"][0]
    assert (idle["handler"], idle["status_code"]) == ("static_response", 503)
    fallback = https[-1]
    assert "match" not in fallback and fallback["handle"][0]["status_code"] == 404
    assert config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False
    assert render(table, s) == config  # pure


def test_render_tls_policies_internal_for_local_names_acme_on_demand_for_public(
    tmp_path: Path,
) -> None:
    s = settings_for(tmp_path, acme_email="ops@example.com", acme_staging=True)
    table = RouteTable([route("shop", Upstream("127.0.0.1:1"), extra=["www.Shop.example.com"])])
    tls = render(table, s)["apps"]["tls"]["automation"]
    local, public = tls["policies"]
    assert local == {"subjects": ["shop.localhost"], "issuers": [{"module": "internal"}]}
    assert public["subjects"] == ["www.shop.example.com"]
    assert public["on_demand"] is True
    assert public["issuers"][0]["email"] == "ops@example.com"
    assert "staging" in public["issuers"][0]["ca"]
    assert tls["on_demand"]["permission"]["endpoint"] == s.ask_url
    assert is_local_name("10.0.0.1") and is_local_name("x.internal") and not is_local_name("a.io")


def test_render_redirects_plain_http_only_when_asked(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    table = RouteTable([route("secure", Upstream("127.0.0.1:1"), redirect_https=True)])
    config = render(table, s)
    plain = config["apps"]["http"]["servers"]["http"]["routes"][0]["handle"][0]
    assert plain["status_code"] == 308
    assert f":{s.https_port}" in plain["headers"]["Location"][0]
    tls_side = config["apps"]["http"]["servers"]["https"]["routes"][0]["handle"][0]
    assert tls_side["handler"] == "reverse_proxy"


# -- a live Caddy --------------------------------------------------------------------------


async def test_route_add_update_remove(caddy: CaddyProcess, backends: dict[str, Backend]) -> None:
    assert (await get(caddy, "blog.localhost")).status_code == 404
    await caddy.apply(RouteTable([route("blog", backends["A"].upstream)]))
    r = await get(caddy, "blog.localhost")
    assert (r.status_code, r.text) == (200, "A")
    await caddy.apply(RouteTable([route("blog", backends["B"].upstream)]))
    assert (await get(caddy, "blog.localhost")).text == "B"
    await caddy.apply(RouteTable([]))
    assert (await get(caddy, "blog.localhost")).status_code == 404


async def test_balances_across_two_instances(
    caddy: CaddyProcess, backends: dict[str, Backend]
) -> None:
    await caddy.apply(RouteTable([route("blog", backends["A"].upstream, backends["B"].upstream)]))
    async with httpx.AsyncClient(timeout=5) as client:
        seen = [(await get(caddy, "blog.localhost", client)).text for _ in range(10)]
    assert set(seen) == {"A", "B"}


async def test_tls_handshake_verified_against_the_internal_ca(
    caddy: CaddyProcess, backends: dict[str, Backend]
) -> None:
    await caddy.apply(RouteTable([route("blog", backends["A"].upstream)]))

    def fetch() -> bytes:
        end = time.monotonic() + 20
        while True:
            try:
                context = ssl.create_default_context(cafile=str(caddy.internal_root))
                port = caddy.settings.https_port
                with (
                    socket.create_connection(("127.0.0.1", port), 5) as raw,
                    context.wrap_socket(raw, server_hostname="blog.localhost") as tls,
                ):
                    tls.sendall(
                        b"GET / HTTP/1.1\r\nHost: blog.localhost\r\nConnection: close\r\n\r\n"
                    )
                    return tls.recv(4096)
            except (OSError, ssl.SSLError):
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)

    answer = await asyncio.to_thread(fetch)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"A")
    cert = certificate_for(storage_root(caddy.settings), "Blog.localhost")
    assert cert is not None and cert.managed_by == "internal"
    assert "Caddy Local Authority" in (cert.issuer or "") and cert.not_after
    assert certificate_for(storage_root(caddy.settings), "other.localhost") is None


async def test_unknown_host_404_and_app_without_instances_503_fast(caddy: CaddyProcess) -> None:
    await caddy.apply(RouteTable([route("idle")]))
    started = time.monotonic()
    unknown = await get(caddy, "nobody.localhost")
    idle = await get(caddy, "idle.localhost")
    assert time.monotonic() - started < 1.0
    assert unknown.status_code == 404 and "No app is served" in unknown.text
    assert idle.status_code == 503 and "idle has no running instances" in idle.text


async def test_a_killed_caddy_comes_back_with_its_routes(
    caddy: CaddyProcess, backends: dict[str, Backend]
) -> None:
    await caddy.apply(RouteTable([route("blog", backends["A"].upstream)]))
    old = caddy.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    end = time.monotonic() + 10
    while True:
        try:
            r = await get(caddy, "blog.localhost")
            if r.status_code == 200 and caddy.pid != old:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < end, "caddy was not restarted with its routes"
        await asyncio.sleep(0.1)
    assert caddy.restarts == 1 and r.text == "A"


async def test_a_new_edge_process_starts_with_the_last_table(
    tmp_path: Path, backends: dict[str, Backend]
) -> None:
    s = settings_for(tmp_path / "edge")
    first = CaddyProcess(s)
    await first.start()
    await first.apply(RouteTable([route("blog", backends["B"].upstream)]))
    await first.stop()
    second = CaddyProcess(s)
    await second.start()  # the control plane is not there to apply anything
    try:
        assert (await get(second, "blog.localhost")).text == "B"
    finally:
        await second.stop()


async def test_zero_failed_requests_while_instances_are_swapped(
    caddy: CaddyProcess, backends: dict[str, Backend]
) -> None:
    a, b = backends["A"], backends["B"]
    await caddy.apply(RouteTable([route("blog", a.upstream)]))
    url = f"http://127.0.0.1:{caddy.settings.http_port}/"
    c = Backend("C")
    try:
        with Load(url, "blog.localhost", threads=3) as load:
            await asyncio.sleep(0.5)
            # deploy: the new instance joins, the old one leaves the table, drains, then stops
            await caddy.apply(RouteTable([route("blog", a.upstream, b.upstream)]))
            await asyncio.sleep(0.5)
            await caddy.apply(RouteTable([route("blog", b.upstream)]))
            await asyncio.sleep(0.5)
            a.close()
            await asyncio.sleep(0.5)
            # rollback: a fresh instance replaces B the same way
            await caddy.apply(RouteTable([route("blog", b.upstream, c.upstream)]))
            await asyncio.sleep(0.5)
            await caddy.apply(RouteTable([route("blog", c.upstream)]))
            await asyncio.sleep(0.5)
            b.close()
            await asyncio.sleep(0.5)
    finally:
        c.close()
    result = load.result
    total, failures, answers = result.total, result.failures, result.answers
    total = sum(answers.values())
    assert total > 100
    assert failures == [], f"{len(failures)} of {total} failed: {failures[:5]}"
    assert {"A", "B", "C"} <= set(answers)
    figures = await traffic_for_app(caddy, "blog")
    assert figures["requests"] >= total - 10  # the log may trail by a few lines
    assert figures["status_2xx"] == figures["requests"] and figures["latency_p50_ms"] is not None
