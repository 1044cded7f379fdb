"""The on-demand TLS "ask" endpoint an edge node's Caddy calls before it gets a certificate.

It listens on 127.0.0.1 only (a port of its own) and answers 200 when ``allowed(domain)``
says yes, 403 otherwise; the edge node decides by asking the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shellwego.errors import EdgeError

START_TIMEOUT = 10.0


class AskServer:
    def __init__(self, allowed: Callable[[str], Awaitable[bool]]) -> None:
        self.allowed = allowed
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        if self._sock is None:
            raise EdgeError("the ask endpoint is not started")
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/ask"

    async def _ask(self, request: Request) -> PlainTextResponse:
        domain = request.query_params.get("domain", "").strip()
        if not domain or len(domain) > 253:
            return PlainTextResponse("a domain is required\n", status_code=400)
        if await self.allowed(domain):
            return PlainTextResponse("ok\n")
        return PlainTextResponse(f"{domain} is not served here\n", status_code=403)

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        app = Starlette(routes=[Route("/ask", self._ask, methods=["GET"])])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        server = uvicorn.Server(config)
        # the process owner handles signals; uvicorn must not take them over
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="edge-ask")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not server.started:
            if self._task.done():
                self._task.result()
                raise EdgeError("the ask endpoint stopped at start")
            if loop.time() > deadline:
                raise EdgeError("the ask endpoint did not start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        if self._sock is not None:
            self._sock.close()
