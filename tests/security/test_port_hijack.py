"""Instances sharing the host's network: a port held by another program is never handed
over silently, and a health check never passes on a listener that is not the instance's."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shellwego.agent.health import HealthMonitor, Target
from shellwego.agent.reconcile import HealthCheck
from shellwego.errors import PortInUse
from shellwego.runtime.driver import InstanceState
from support.net import free_port
from support.scratch_node import Node, http_get, wait_http, wait_until


class Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "8")
        self.end_headers()
        self.wfile.write(b"hijacked")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def squatter() -> Iterator[socket.socket]:
    """Another tenant's program listening on every address of a port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", free_port()))
    sock.listen(16)
    with sock:
        yield sock


async def test_a_port_held_by_another_program_fails_the_start_and_says_so(
    node: Node, squatter: socket.socket
) -> None:
    port = squatter.getsockname()[1]
    driver = node.driver()
    spec = node.spec("late-1", node.app("late"), port=port)
    with pytest.raises(PortInUse, match=f"port {port} is already in use on this host"):
        await driver.start(spec)
    status = await driver.inspect("late-1")
    assert status.state == InstanceState.EXITED
    assert status.error_code == "port-in-use"


async def test_a_listener_on_loopback_only_counts_as_taken_too(node: Node) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen(1)
        spec = node.spec("lo-1", node.app("lo"), port=sock.getsockname()[1])
        with pytest.raises(PortInUse):
            await node.driver().start(spec)


async def test_health_never_passes_on_another_programs_listener(node: Node) -> None:
    driver = node.driver()
    port = free_port()
    # an instance that never listens, and a hijacker that takes its port after it started
    idle = node.spec("idle-1", node.app("idle", {"idle.sh": "exec sleep 600\n"}), "sh idle.sh",
                     port=port)  # fmt: skip
    await driver.start(idle)
    monitor = HealthMonitor(driver, lambda: None)
    hijacker = ThreadingHTTPServer(("0.0.0.0", port), Answer)
    serving = threading.Thread(target=hijacker.serve_forever, daemon=True)
    serving.start()
    try:
        # it answers 200 on the instance's port: a probe alone would call that healthy
        assert b"hijacked" in await asyncio.to_thread(http_get, port)
        for kind in ("tcp", "http"):
            target = Target("idle-1", port, HealthCheck(type=kind))  # type: ignore[arg-type]
            assert not await monitor.check(target), kind
        hijacker.shutdown()
        hijacker.server_close()

        # an instance that does listen on its port is healthy
        web = node.spec("web-1", node.app("web"))
        await driver.start(web)
        await wait_http(web.port)

        async def healthy() -> bool:
            return await monitor.check(Target("web-1", web.port, HealthCheck(type="http")))

        assert await wait_until(healthy)
    finally:
        hijacker.shutdown()
        hijacker.server_close()
        await monitor.close()
        await asyncio.gather(driver.stop("idle-1", 1), driver.stop("web-1", 1))
