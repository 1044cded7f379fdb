"""Control-plane replicas for failover tests: another API server on the same database
(:func:`api_replica`), and a TCP proxy in front of one whose link the test can cut, to
stand for a replica that died ("refuse": connections closed, new ones closed at once) or
whose host vanished ("hang": connections stay open and nothing more passes)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Literal

import uvicorn

from shellwego.api import create_app
from shellwego.services.context import Context

Mode = Literal["pass", "refuse", "hang"]


class CutProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "pass"
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> CutProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.set("refuse")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def set(self, mode: Mode) -> None:
        """Change what the link does, to open connections too."""
        self.mode = mode
        if mode == "pass":
            return
        for task in list(self._pipes):
            task.cancel()
        if mode == "refuse":
            for client, upstream in list(self._links):
                client.close()
                if upstream is not None:
                    upstream.close()
            self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.close()
            return
        if self.mode == "hang":
            self._links.add((writer, None))
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._links.add((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(1 << 16):
                dst.write(data)
                await dst.drain()
            if self.mode == "pass":
                dst.close()


@contextlib.asynccontextmanager
async def api_replica(ctx: Context) -> AsyncIterator[str]:
    """Another API server on ``ctx``'s database: a replica of the control plane (its URL)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if task.done():
        task.result()  # the error that stopped it
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True  # do not wait out the long polls of clients
        await task
        sock.close()


@contextlib.asynccontextmanager
async def proxy_to(url: str) -> AsyncIterator[CutProxy]:
    """A :class:`CutProxy` in front of ``http://host:port``."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    proxy = await CutProxy(host, int(port)).start()
    try:
        yield proxy
    finally:
        await proxy.close()
