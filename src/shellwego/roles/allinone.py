"""`shellwego up`: control plane + a local agent + the edge, on one machine, SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from shellwego.agent.daemon import Agent
from shellwego.agent.settings import AgentSettings
from shellwego.controllers import edge as edge_sync
from shellwego.edge.metrics import traffic_for_app
from shellwego.edge.process import CaddyProcess
from shellwego.files import write_private
from shellwego.models import OrganizationCreate, User, UserCreate
from shellwego.services import auth, masterkey
from shellwego.services.bootstrap import build_context
from shellwego.services.context import Context
from shellwego.settings import Settings
from shellwego.store import repository as repo

from .server import (
    ControlPlane,
    edge_settings,
    ensure_join_token,
    equip,
    private_data_dir,
    process_driver,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FirstStart:
    """The owner's login made on first start; the password is only in ``credentials``
    (0600), never printed, so it stays out of service logs."""

    email: str
    credentials: Path
    token: str


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
    credentials = ctx.settings.data_dir / "credentials.txt"
    write_private(credentials, f"email: {email}\npassword: {password}\n")
    return FirstStart(email=email, credentials=credentials, token=result.token.secret)


class AllInOne:
    def __init__(self, settings: Settings, *, email: str = "owner@example.com") -> None:
        self.settings = settings
        self.email = email
        private_data_dir(settings)
        self.ctx = build_context(settings)
        masterkey.check(self.ctx.db, self.ctx.envelope.provider, self.ctx.clock)
        equip(self.ctx)
        self.first: FirstStart | None = None
        # apps never see the platform's data (database, master key, other apps' slugs)
        self.driver = process_driver(
            settings,
            settings.data_dir / "agent" / "instances",
            [settings.data_dir],
            reachable_from=settings.data_dir,
        )
        self.caddy = CaddyProcess(edge_settings(settings))
        self.plane = ControlPlane(
            self.ctx,
            extra_tasks=[
                lambda: edge_sync.run(self.ctx, self.caddy, self.plane.stopping),
            ],
        )
        self.agent: Agent | None = None
        self.agent_task: asyncio.Task[None] | None = None

    async def start(
        self, on_first_start: Callable[[FirstStart], None] | None = None
    ) -> FirstStart | None:
        """Start everything; ``on_first_start`` gets the owner's login as soon as it exists.

        It runs before the edge and the API start, so a start that fails after this point
        (a busy port) leaves the login saved for the next start, which is then a resume.
        """
        self.first = await run_in_threadpool(first_start, self.ctx, self.email)
        if self.first is not None and on_first_start is not None:
            on_first_start(self.first)
        join = await run_in_threadpool(ensure_join_token, self.ctx)

        async def traffic(app_id: str) -> dict[str, object]:
            return await traffic_for_app(self.caddy, app_id)

        self.ctx.traffic = traffic
        await self.caddy.start()
        await self.plane.start()
        self.agent = Agent(
            AgentSettings(
                server_url=self.settings.api_url,
                join_token=join,
                state_dir=self.settings.data_dir / "agent",
                hostname=socket.gethostname(),
                labels={},
                heartbeat_interval=self.settings.heartbeat_interval,
                cpu_overcommit=self.settings.cpu_overcommit,
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
            # nothing of the platform runs any more: its bridge, rules and namespaces go
            # too (the next start makes them again; instances get their addresses afresh)
            with contextlib.suppress(Exception):
                await self.driver.close()
                await self.driver.teardown_network()
        await self.plane.stop()
        await self.caddy.stop()
