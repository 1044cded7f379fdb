"""`shellwego up`: control plane + a local agent + the edge, on one machine, SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from shellwego.agent.daemon import Agent
from shellwego.agent.settings import AgentSettings
from shellwego.controllers import edge as edge_sync
from shellwego.edge.metrics import traffic_for_app
from shellwego.edge.process import CaddyProcess
from shellwego.edge.routes import EdgeSettings
from shellwego.models import OrganizationCreate, User, UserCreate
from shellwego.runtime.process import ProcessDriver
from shellwego.services import auth, nodes
from shellwego.services.bootstrap import build_context
from shellwego.services.context import Context
from shellwego.services.tokens import JOIN_PREFIX, new_token
from shellwego.settings import Settings
from shellwego.store import repository as repo

from .server import ControlPlane, equip

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FirstStart:
    email: str
    password: str
    token: str


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def first_start(ctx: Context, email: str) -> FirstStart | None:
    """On an empty database: the owner, the organization and an API token."""
    with ctx.db.session() as s:
        if repo.count(s, User) > 0:
            return None
    password = secrets.token_urlsafe(15)
    result = auth.bootstrap(
        ctx,
        UserCreate(email=email, name="Owner", password=password),
        OrganizationCreate(name="Default", slug="default"),
    )
    _write_private(
        ctx.settings.data_dir / "credentials.txt", f"email: {email}\npassword: {password}\n"
    )
    return FirstStart(email=email, password=password, token=result.token.secret)


def local_join_token(ctx: Context) -> str:
    """The join token the local agent uses; kept in the data directory (0600)."""
    path = ctx.settings.data_dir / "join-token"
    if path.exists():
        token = path.read_text().strip()
    else:
        token = new_token(JOIN_PREFIX)
        _write_private(path, token)
    nodes.create_join_token(ctx, "local agent", token)
    return token


class AllInOne:
    def __init__(self, settings: Settings, *, email: str = "owner@example.com") -> None:
        self.settings = settings
        self.email = email
        self.ctx = build_context(settings)
        equip(self.ctx)
        self.first: FirstStart | None = None
        self.driver = ProcessDriver(settings.data_dir / "agent" / "instances")
        self.caddy = CaddyProcess(
            EdgeSettings(
                http_port=settings.http_port,
                https_port=settings.https_port,
                admin_socket=settings.data_dir / "caddy" / "admin.sock",
                base_domain=settings.base_domain,
                acme_email=settings.acme_email,
                acme_ca=settings.acme_ca,
                acme_staging=settings.acme_staging,
                ask_url=f"{settings.api_url}/v1/edge/ask",
                data_dir=settings.data_dir / "caddy",
            )
        )
        self.plane = ControlPlane(
            self.ctx,
            extra_tasks=[
                lambda: edge_sync.run(self.ctx, self.caddy, self.plane.stopping),
            ],
        )
        self.agent: Agent | None = None
        self.agent_task: asyncio.Task[None] | None = None

    async def start(self) -> FirstStart | None:
        self.first = await run_in_threadpool(first_start, self.ctx, self.email)
        join = await run_in_threadpool(local_join_token, self.ctx)

        async def traffic(app_name: str) -> dict[str, object]:
            return await traffic_for_app(self.caddy, app_name)

        self.ctx.extras["traffic"] = traffic
        await self.caddy.start()
        await self.plane.start()
        self.agent = Agent(
            AgentSettings(
                server_url=self.settings.api_url,
                join_token=join,
                state_dir=self.settings.data_dir / "agent",
                hostname=socket.gethostname(),
                labels={},
                runtimes=["process"],
                heartbeat_interval=self.settings.heartbeat_interval,
            ),
            self.driver,
        )
        self.agent_task = asyncio.create_task(self.agent.run(), name="agent")
        return self.first

    async def stop(self, *, stop_instances: bool = True) -> None:
        if self.agent is not None:
            await self.agent.stop()
        if self.agent_task is not None:
            self.agent_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.agent_task
        if stop_instances:
            for status in await self.driver.list():
                with contextlib.suppress(Exception):
                    await self.driver.stop(status.instance_id, grace_seconds=5)
        await self.plane.stop()
        await self.caddy.stop()
