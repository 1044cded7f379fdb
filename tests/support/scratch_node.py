"""Real ProcessDrivers on a scratch node directory, with every instance cleaned up
afterwards: the ``node`` fixture (import it into a conftest.py) and its helpers."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shellwego.runtime.driver import InstanceSpec
from shellwego.runtime.process import ProcessDriver
from support.net import free_port

# A tiny HTTP app: GET / answers its environment as JSON; GET /pid answers its pid.
HTTP_APP = """
import http.server, json, os, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(dict(os.environ)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("listening on", os.environ["PORT"], flush=True)
print("ready", file=sys.stderr, flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""



def http_get(port: int, path: str = "/", timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return bytes(resp.read())


async def wait_until(
    check: Callable[[], Awaitable[Any]], timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {last!r})")


async def wait_http(port: int, timeout: float = 20.0) -> bytes:
    async def get() -> bytes | None:
        try:
            return await asyncio.to_thread(http_get, port)
        except OSError:
            return None

    return bytes(await wait_until(get, timeout))


class Node:
    """A scratch node: app directories (slugs) under ``apps/``, private to root as the
    agent keeps them, driver state under ``instances/``; ``signals/`` is a directory
    outside both that instances can read."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.apps = root / "apps"
        self.state_dir = root / "instances"
        self.signals = root.parent / "signals"
        self.apps.mkdir(parents=True, mode=0o700)
        self.signals.mkdir(mode=0o755)
        self.drivers: list[ProcessDriver] = []

    def driver(self, **options: Any) -> ProcessDriver:
        options.setdefault("backoff_base", 0.2)
        driver = ProcessDriver(self.state_dir, **options)
        self.drivers.append(driver)
        return driver

    def app(self, name: str, files: dict[str, str] | None = None) -> Path:
        app_dir = self.apps / name
        app_dir.mkdir(parents=True, exist_ok=True)
        for rel, text in (files or {"web.py": HTTP_APP}).items():
            (app_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (app_dir / rel).write_text(text)
        return app_dir

    def spec(
        self,
        instance_id: str,
        app_dir: Path,
        command: str = "python3 web.py",
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        **extra: Any,
    ) -> InstanceSpec:
        return InstanceSpec(
            instance_id=instance_id,
            app_id="app-" + app_dir.name,
            app_name=app_dir.name,
            process_type="web",
            release_id="rel-1",
            command=command,
            app_dir=app_dir,
            env=env or {},
            port=port if port is not None else free_port(),
            **extra,
        )


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Nothing from the process umask helps: files are created as permissive as it allows."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    # not under pytest's private tmp dirs: unsandboxed instances of the unprivileged
    # instance user must be able to reach their app directories (this one is 0711)
    base = Path(tempfile.mkdtemp(prefix="shellwego-node-", dir="/var/tmp"))
    base.chmod(0o711)
    try:
        scratch = Node(base / "node")
        yield scratch
        for driver in scratch.drivers:
            await driver.close()
        cleaner = ProcessDriver(scratch.state_dir)
        for status in await cleaner.recover():
            await cleaner.stop(status.instance_id, grace_seconds=0.5)
            await cleaner.remove(status.instance_id)
        await cleaner.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
