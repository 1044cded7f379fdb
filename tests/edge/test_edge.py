"""The edge with a real Caddy: routing, balancing, TLS, clear answers, resilience."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from shellwego.edge.certificates import certificate_for
from shellwego.edge.metrics import traffic_for_app
from shellwego.edge.process import CaddyProcess
from shellwego.edge.render import render, storage_root
from shellwego.edge.routes import AppRoute, RouteTable, Upstream
from shellwego.models.hostnames import is_local_name
from support.load import Load

from .realparts import (
    Backend,
    free_port,
    get,
    https_get,
    listening_ports,
    route,
    settings_for,
)

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
    assert config["admin"]["listen"] == f"unix/{s.admin_socket}|0600"
    https = config["apps"]["http"]["servers"]["https"]["routes"]
    assert https[0]["match"] == [{"host": ["blog.localhost"]}]
    proxy = https[0]["handle"][0]
    assert proxy["handler"] == "reverse_proxy"
    assert [u["dial"] for u in proxy["upstreams"]] == ["127.0.0.1:20001", "127.0.0.1:20002"]
    assert proxy["load_balancing"]["try_duration"]
    assert proxy["health_checks"]["active"]["uri"] == "/up"
    idle = https[1]["handle"][0]
    assert (idle["handler"], idle["status_code"]) == ("static_response", 503)
    assert idle["headers"]["Retry-After"] == ["5"]
    fallback = https[-1]
    assert "match" not in fallback and fallback["handle"][0]["status_code"] == 404
    assert config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False
    # kept-alive upstream connections for more than Caddy's default 32 concurrent requests
    assert proxy["transport"]["keep_alive"]["max_idle_conns_per_host"] >= 64
    for server in config["apps"]["http"]["servers"].values():
        # a proxy failure (every instance unreachable) gets the app's 503 page
        unreachable = server["errors"]["routes"][0]
        assert unreachable["match"][0]["host"] == ["blog.localhost"]
        assert unreachable["handle"][0]["status_code"] == 503
    assert config["apps"]["http"]["servers"]["http"]["protocols"] == ["h1"]
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
    # ACME challenges are answered on the edge's own ports, never on 80/443
    assert public["issuers"][0]["challenges"] == {
        "http": {"alternate_port": s.http_port},
        "tls-alpn": {"alternate_port": s.https_port},
    }
    servers = render(table, s)["apps"]["http"]["servers"]
    assert servers["https"]["automatic_https"] == {"disable_redirects": True}
    assert {tuple(srv["listen"]) for srv in servers.values()} == {
        (f":{s.http_port}",),
        (f":{s.https_port}",),
    }
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


async def test_active_health_checks_take_a_failing_instance_out(
    caddy: CaddyProcess, backends: dict[str, Backend]
) -> None:
    sick = Backend("sick", healthy=False)
    try:
        await caddy.apply(
            RouteTable([route("blog", backends["A"].upstream, sick.upstream, health_path="/up")])
        )
        end = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                seen = [(await get(caddy, "blog.localhost", client)).text for _ in range(6)]
                if seen == ["A"] * 6:
                    break
                assert time.monotonic() < end, f"the failing instance still gets requests: {seen}"
                await asyncio.sleep(0.2)
    finally:
        sick.close()


async def test_tls_handshake_verified_against_the_internal_ca(
    caddy: CaddyProcess, backends: dict[str, Backend]
) -> None:
    await caddy.apply(RouteTable([route("blog", backends["A"].upstream)]))

    answer = await asyncio.to_thread(https_get, caddy, "blog.localhost")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"A")
    cert = certificate_for(storage_root(caddy.settings), "Blog.localhost")
    assert cert is not None and cert.managed_by == "internal"
    assert "Caddy Local Authority" in (cert.issuer or "") and cert.not_after
    assert certificate_for(storage_root(caddy.settings), "other.localhost") is None


class AskEndpoint:
    """The control plane's on-demand TLS gate: records every question, allows no name."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        asked = self.asked

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                asked.append(self.path)
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/edge/ask"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_private_admin_socket_own_ports_only_and_on_demand_tls_asks_first(
    tmp_path: Path, backends: dict[str, Backend]
) -> None:
    ask = AskEndpoint()
    s = settings_for(
        tmp_path / "edge",
        ask_url=ask.url,
        acme_email="ops@example.com",
        acme_ca="http://127.0.0.1:9/acme/directory",  # never reached: the gate says no
    )
    caddy = CaddyProcess(s)
    await caddy.start()
    try:
        await caddy.apply(
            RouteTable([route("shop", backends["A"].upstream, extra=["www.shop-example.com"])])
        )
        assert stat.S_IMODE(os.stat(s.admin_socket).st_mode) == 0o600
        assert caddy.pid is not None
        assert listening_ports(caddy.pid) == {s.http_port, s.https_port}

        def handshake() -> None:
            context = ssl.create_default_context()
            with (
                socket.create_connection(("127.0.0.1", s.https_port), 5) as raw,
                context.wrap_socket(raw, server_hostname="www.shop-example.com"),
            ):
                pass

        try:
            await asyncio.to_thread(handshake)
            raise AssertionError("a certificate was served without the control plane's yes")
        except (OSError, ssl.SSLError):
            pass
        assert any("domain=www.shop-example.com" in q for q in ask.asked), ask.asked
        # the public name is still routed over plain HTTP
        assert (await get(caddy, "www.shop-example.com")).text == "A"
    finally:
        await caddy.stop()
        ask.close()


async def test_traffic_is_counted_per_app_and_status_class(
    caddy: CaddyProcess, backends: dict[str, Backend]
) -> None:
    a = backends["A"].upstream
    await caddy.apply(
        RouteTable([route("web", a), route("idle"), route("secure", a, redirect_https=True)])
    )
    async with httpx.AsyncClient(timeout=5) as client:
        for host, n in (("web", 3), ("idle", 2), ("secure", 1), ("nobody", 2)):
            for _ in range(n):
                await get(caddy, f"{host}.localhost", client)
    expected = {
        "web": {"requests": 3, "status_2xx": 3, "status_5xx": 0},
        "idle": {"requests": 2, "status_2xx": 0, "status_5xx": 2},
        "secure": {"requests": 1, "status_3xx": 1, "status_2xx": 0},
    }
    end = time.monotonic() + 30
    while True:
        seen = {app: await traffic_for_app(caddy, f"id-{app}") for app in expected}
        if all(all(seen[app][k] == v for k, v in want.items()) for app, want in expected.items()):
            break
        assert time.monotonic() < end, seen
        await asyncio.sleep(0.05)
    assert seen["web"]["latency_p50_ms"] is not None
    assert seen["web"]["latency_p50_ms"] <= seen["web"]["latency_p99_ms"]
    assert (await traffic_for_app(caddy, "id-nobody"))["requests"] == 0
    # figures belong to the app (its id), not to a name: renamed, it keeps counting
    renamed = AppRoute("id-web", "site", ["site.localhost"], [a])
    await caddy.apply(RouteTable([renamed]))
    for _ in range(2):
        assert (await get(caddy, "site.localhost")).status_code == 200
    end = time.monotonic() + 30
    while (await traffic_for_app(caddy, "id-web"))["requests"] != 5:
        assert time.monotonic() < end, await traffic_for_app(caddy, "id-web")
        await asyncio.sleep(0.05)


async def test_requests_before_an_app_was_routed_are_not_its_traffic(
    caddy: CaddyProcess, backends: dict[str, Backend]
) -> None:
    for _ in range(3):
        assert (await get(caddy, "late.localhost")).status_code == 404  # no such app yet
    await caddy.apply(RouteTable([route("late", backends["A"].upstream)]))
    assert (await get(caddy, "late.localhost")).status_code == 200
    end = time.monotonic() + 30
    while (figures := await traffic_for_app(caddy, "id-late"))["requests"] < 1:
        assert time.monotonic() < end, figures
        await asyncio.sleep(0.05)
    assert (figures["requests"], figures["status_2xx"], figures["status_4xx"]) == (1, 1, 0)


async def test_unknown_host_404_and_app_without_instances_503(caddy: CaddyProcess) -> None:
    await caddy.apply(RouteTable([route("idle")]))
    unknown = await get(caddy, "nobody.localhost")
    idle = await get(caddy, "idle.localhost")
    assert unknown.status_code == 404 and "No app is served" in unknown.text
    assert idle.status_code == 503 and "idle has no running instances" in idle.text


async def test_instances_listed_but_unreachable_get_the_503_page_within_the_retry_window(
    caddy: CaddyProcess,
) -> None:
    dead = [Upstream(f"127.0.0.1:{free_port()}"), Upstream(f"127.0.0.1:{free_port()}")]
    await caddy.apply(RouteTable([route("gone", *dead)]))
    r = await get(caddy, "gone.localhost")
    assert r.status_code == 503, r.text
    assert "gone is not answering right now" in r.text
    assert r.headers["Retry-After"] == "5" and r.headers["Content-Type"].startswith("text/html")
    # the same page over HTTPS (the TLS server has its own error routes)
    answer = await asyncio.to_thread(https_get, caddy, "gone.localhost")
    assert answer.startswith(b"HTTP/1.1 503") and b"gone is not answering" in answer
    assert b"Retry-After: 5" in answer


async def test_a_killed_caddy_comes_back_with_its_routes(
    caddy: CaddyProcess, backends: dict[str, Backend]
) -> None:
    await caddy.apply(RouteTable([route("blog", backends["A"].upstream)]))
    old = caddy.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    while caddy.pid == old and caddy.running:
        await asyncio.sleep(0.01)
    # the listening socket outlives Caddy: a request sent while Caddy is down waits in
    # the queue and is answered by the restarted Caddy, instead of being refused
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.get(
            f"http://127.0.0.1:{caddy.settings.http_port}/", headers={"Host": "blog.localhost"}
        )
    assert (r.status_code, r.text) == (200, "A")
    assert caddy.restarts == 1 and caddy.pid != old


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
    assert result.total > 100, result.summary()
    assert result.failed == 0, result.summary()
    assert {"A", "B", "C"} <= set(result.answers), result.summary()
    figures = await traffic_for_app(caddy, "id-blog")
    assert figures["requests"] >= result.total - 10  # the log may trail by a few lines
    assert figures["status_2xx"] == figures["requests"] and figures["latency_p50_ms"] is not None
