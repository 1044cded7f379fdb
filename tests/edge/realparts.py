"""Real parts for the edge tests: upstream HTTP servers, free ports, settings, requests, the
in-process API."""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from shellwego.edge.process import CaddyProcess
from shellwego.edge.routes import AppRoute, EdgeSettings, Upstream
from support.net import free_port


class Backend:
    """A small threaded HTTP server answering its own name (its health check at /up fails
    when it is not ``healthy``)."""

    def __init__(self, name: str, *, healthy: bool = True) -> None:
        body = name.encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                sick = self.path == "/up" and not healthy
                self.send_response(503 if sick else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.closed = False

    @property
    def upstream(self) -> Upstream:
        return Upstream(address=f"127.0.0.1:{self.server.server_port}")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.shutdown()
            self.server.server_close()


def settings_for(data: Path, **over: object) -> EdgeSettings:
    base = EdgeSettings(
        http_port=free_port(),
        https_port=free_port(),
        admin_socket=data / "admin.sock",
        base_domain="localhost",
        acme_email=None,
        acme_ca=None,
        acme_staging=False,
        # a port no server listens on (tests that need the ask endpoint start their own)
        ask_url=f"http://127.0.0.1:{free_port()}/v1/edge/ask",
        data_dir=data,
    )
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def route(
    name: str,
    *upstreams: Upstream,
    extra: list[str] | None = None,
    health_path: str | None = None,
    redirect_https: bool = False,
) -> AppRoute:
    """The route of app ``name`` at ``<name>.localhost`` (plus ``extra`` hostnames)."""
    return AppRoute(
        app_id=f"id-{name}",
        app_name=name,
        hostnames=[f"{name}.localhost", *(extra or [])],
        upstreams=list(upstreams),
        health_path=health_path,
        redirect_https=redirect_https,
    )


async def get(
    caddy: CaddyProcess, host: str, client: httpx.AsyncClient | None = None
) -> httpx.Response:
    url = f"http://127.0.0.1:{caddy.settings.http_port}/"
    if client is not None:
        return await client.get(url, headers={"Host": host})
    async with httpx.AsyncClient(timeout=5) as c:
        return await c.get(url, headers={"Host": host})


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (from /proc: its socket inodes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass
class Api:
    """The API (in-process or a real server) with one organization, called as its owner."""

    client: httpx.Client
    token: str

    @classmethod
    def bootstrap(cls, client: httpx.Client, join_token: str | None = None) -> Api:
        """The first owner; ``join_token``: the one `shellwego server` asks for."""
        r = client.post(
            "/v1/bootstrap",
            headers={"Authorization": f"Bearer {join_token}"} if join_token else {},
            json={
                "user": {"email": "owner@example.com", "password": "a long enough password"},
                "organization": {"name": "Edge", "slug": "edge"},
            },
        )
        assert r.status_code == 201, r.text
        return cls(client, r.json()["token"]["token"])

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        r = self.call(method, path, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None


def https_get(caddy: CaddyProcess, host: str, deadline: float = 20) -> bytes:
    """GET / over TLS with SNI ``host``, verified against the edge's internal CA (retried
    while the certificate is being issued); the raw response."""
    end = time.monotonic() + deadline
    while True:
        try:
            context = ssl.create_default_context(cafile=str(caddy.internal_root))
            port = caddy.settings.https_port
            with (
                socket.create_connection(("127.0.0.1", port), 5) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                chunks = []
                while chunk := tls.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks)
        except (OSError, ssl.SSLError):
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
