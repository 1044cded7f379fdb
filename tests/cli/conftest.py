"""The real API under uvicorn in a background thread, a CLI runner pointed at it, and (for
the commands about instances and nodes) a real agent with the process runtime beside it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner, Result

from shellwego.agent.daemon import Agent, run_until_stopped
from shellwego.agent.settings import AgentSettings
from shellwego.api import create_app
from shellwego.cli.config import save_login
from shellwego.cli.main import app as cli_app
from shellwego.controllers import loops
from shellwego.roles.server import equip
from shellwego.runtime.process import ProcessDriver
from shellwego.services import nodes
from shellwego.services.context import Context
from shellwego.settings import Settings

EMAIL = "owner@example.com"
PASSWORD = "correct horse battery staple"


MIB = 1024**2
GIB = 1024**3


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # instance ports of their own: platforms of other test runs may share the machine
    return Settings.from_env(
        {}, data_dir=tmp_path / "data", database_url=database_url, instance_ports=(31000, 31999)
    )


@dataclass
class Api:
    url: str
    token: str
    ctx: Context


@pytest.fixture
def api(ctx: Context) -> Iterator[Api]:
    equip(ctx)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ctx), log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
    )
    stopping = asyncio.Event()

    async def serve() -> None:
        # the rollout loop finishes deployments, as in `shellwego server`
        rollout = asyncio.create_task(loops.rollout_loop(ctx, stopping))
        try:
            await server.serve(sockets=[sock])
        finally:
            stopping.set()
            await asyncio.wait_for(rollout, 5)

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    r = httpx.post(
        f"{url}/v1/bootstrap",
        json={
            "user": {"email": EMAIL, "password": PASSWORD, "name": "Owner"},
            "organization": {"name": "Acme", "slug": "acme"},
        },
    )
    assert r.status_code == 201, r.text
    try:
        yield Api(url=url, token=r.json()["token"]["token"], ctx=ctx)
    finally:
        server.should_exit = True
        server.force_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class LocalNode:
    """A real agent (process runtime) registered as ``node-a``, running in its own thread."""

    agent: Agent
    driver: ProcessDriver


@pytest.fixture
def node(api: Api, tmp_path: Path) -> Iterator[LocalNode]:
    join = nodes.create_join_token(api.ctx, "cli-tests")
    state = tmp_path / "node"
    driver = ProcessDriver(state / "instances", hidden_paths=[api.ctx.settings.data_dir])
    agent = Agent(
        AgentSettings(
            server_url=api.url,
            join_token=join,
            state_dir=state,
            hostname="node-a",
            heartbeat_interval=0.5,
            capacity_cpu_millis=4000,
            capacity_memory_bytes=8 * GIB,
        ),
        driver,
    )
    stopping = asyncio.Event()

    async def run() -> None:
        try:
            await run_until_stopped(agent, stopping.wait())
        finally:
            for status in await driver.list():
                await driver.stop(status.instance_id, grace_seconds=2)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while agent.heartbeats < 1:
        assert thread.is_alive() and time.monotonic() < deadline, "the agent did not join"
        time.sleep(0.02)
    try:
        yield LocalNode(agent, driver)
    finally:
        loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the agent and its instances did not stop"
        loop.close()


class Cli:
    """Runs ``shellwego …`` in-process against the test API, in a work directory."""

    def __init__(self, api: Api, config_dir: Path, workdir: Path) -> None:
        self.api = api
        self.config_dir = config_dir
        self.workdir = workdir
        self.runner = CliRunner()

    def env(self) -> dict[str, str | None]:
        return {
            "SHELLWEGO_CONFIG_DIR": str(self.config_dir),
            "SHELLWEGO_API_URL": self.api.url,
            "SHELLWEGO_TOKEN": None,
            "SHELLWEGO_APP": None,
            "XDG_CONFIG_HOME": None,
        }

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str | None] | None = None
    ) -> Result:

        before = Path.cwd()
        os.chdir(self.workdir)
        try:
            return self.runner.invoke(
                cli_app, list(args), input=input, env={**self.env(), **(env or {})}
            )
        finally:
            os.chdir(before)

    def login(self) -> None:
        save_login(self.api.url, self.api.token, self.config_dir)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """``shellwego …`` as a real process (for commands that run until Ctrl-C)."""
        env = {k: v for k, v in {**os.environ, **self.env()}.items() if v is not None}
        env["SHELLWEGO_TOKEN"] = self.api.token
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "shellwego"), *args],
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def cli(api: Api, tmp_path: Path) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(api, tmp_path / "config", work)


@pytest.fixture
def logged_in(cli: Cli) -> Cli:
    cli.login()
    return cli


def stamp(value: str) -> str:
    """How the CLI shows an API timestamp: UTC to the second."""
    from datetime import UTC, datetime

    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def api_get(api: Api, path: str) -> Any:
    r = httpx.get(f"{api.url}{path}", headers={"Authorization": f"Bearer {api.token}"})
    assert r.status_code == 200, r.text
    return r.json()


def register_node(
    api: Api,
    hostname: str,
    *,
    cpu_millis: int = 2000,
    memory_bytes: int = 2 * GIB,
    runtimes: tuple[str, ...] = ("process",),
    labels: dict[str, str] | None = None,
    runtime_reasons: dict[str, str] | None = None,
) -> str:
    """A node that joins through the agent protocol and runs nothing; returns its id."""
    join = nodes.create_join_token(api.ctx, f"{hostname}-join")
    joined = httpx.post(
        f"{api.url}/v1/agent/register",
        headers={"Authorization": f"Bearer {join}"},
        json={
            "hostname": hostname,
            "capacity": {"cpu_millis": cpu_millis, "memory_bytes": memory_bytes},
            "runtimes": list(runtimes),
            "labels": labels or {},
            "runtime_reasons": runtime_reasons or {},
        },
    )
    assert joined.status_code == 201, joined.text
    return str(joined.json()["node_id"])
