"""The control plane: REST API plus its controllers, in one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from shellwego.api import create_app
from shellwego.build.artifacts import ArtifactStore
from shellwego.build.builder import Builder
from shellwego.controllers import loops
from shellwego.runtime.network import NodeNetwork, network_unavailable
from shellwego.runtime.process import ProcessDriver
from shellwego.runtime.state import make_private_dir
from shellwego.services import nodes
from shellwego.services.context import Context
from shellwego.services.tokens import JOIN_PREFIX, new_token
from shellwego.settings import Settings

log = logging.getLogger(__name__)


def equip(ctx: Context) -> None:
    """Attach the build system, artifact store and one-off runner to the context."""
    data = ctx.settings.data_dir
    (data / "tmp").mkdir(parents=True, exist_ok=True)
    ctx.extras["artifacts"] = ArtifactStore(data / "artifacts")
    # build steps run the app's own install code: they never see the platform's data, and
    # have the same process and open-file limits as the app's instances
    ctx.extras["builder"] = Builder(
        data / "cache" / "build",
        hidden_paths=[data],
        pids_limit=ctx.settings.pids_limit,
        nofile_limit=ctx.settings.nofile_limit,
    )
    # so do one-off commands: they see their release's slug (through a private writable
    # layer) and nothing else of the data directory (master key, database, artifacts)
    (data / "oneoff").mkdir(exist_ok=True)
    make_private_dir(data / "oneoff" / "slugs")  # what they run from, out of their reach
    ctx.extras["oneoff_driver"] = process_driver(ctx.settings, data / "oneoff" / "state", [data])


def process_driver(settings: Settings, state: Path, hidden: Sequence[Path]) -> ProcessDriver:
    """The process runtime with the platform's limits; ``hidden``: what its instances must
    not see. Its instances get network namespaces on a node network kept beside ``state``
    unless the operator chose the host's network or this host cannot have them."""
    network = None
    if settings.instance_network == "namespace":
        why = network_unavailable()
        if why is None:
            network = NodeNetwork(state.parent / "network", settings.network)
        else:
            log.warning("%s", why)
    return ProcessDriver(
        state,
        hidden_paths=hidden,
        pids_limit=settings.pids_limit,
        nofile_limit=settings.nofile_limit,
        network=network,
    )


class ControlPlane:
    """API server + rollout and liveness loops; ``run()`` until ``stop()``."""

    def __init__(
        self,
        ctx: Context,
        *,
        extra_tasks: list[Callable[[], Coroutine[Any, Any, Any]]] | None = None,
        log_level: str = "warning",
    ) -> None:
        self.ctx = ctx
        self.stopping = asyncio.Event()
        self.app = create_app(ctx)
        config = uvicorn.Config(
            self.app,
            host=ctx.settings.api_host,
            port=ctx.settings.api_port,
            log_level=log_level,
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(config)
        # the process owner (the CLI) handles signals; uvicorn must not take them over
        self.server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self.extra_tasks = extra_tasks or []
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        await self.ctx.bus.start()
        self.tasks.append(asyncio.create_task(self.server.serve(), name="api"))
        while not self.server.started:
            if self.tasks[0].done():
                self.tasks[0].result()  # raises the bind error
            await asyncio.sleep(0.02)
        self.tasks.append(
            asyncio.create_task(loops.rollout_loop(self.ctx, self.stopping), name="rollout")
        )
        self.tasks.append(
            asyncio.create_task(loops.liveness_loop(self.ctx, self.stopping), name="liveness")
        )
        for factory in self.extra_tasks:
            self.tasks.append(asyncio.create_task(factory()))

    async def stop(self) -> None:
        self.stopping.set()
        self.server.should_exit = True
        await self.ctx.bus.close()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        oneoff = self.ctx.extras.get("oneoff_driver")
        if isinstance(oneoff, ProcessDriver):  # one-off commands end with the API
            await oneoff.close()
            await oneoff.teardown_network()
        self.ctx.db.dispose()


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (credentials, tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def ensure_join_token(ctx: Context) -> str:
    """The join token agents use: SHELLWEGO_JOIN_TOKEN, else one kept in the data dir."""
    token = ctx.settings.join_token
    if token is None:
        path = ctx.settings.data_dir / "join-token"
        if path.exists():
            token = path.read_text().strip()
        else:
            token = new_token(JOIN_PREFIX)
            write_private(path, token)
    nodes.create_join_token(ctx, "default", token)
    return token


def edge_settings(settings: Settings) -> Any:
    from shellwego.edge.routes import EdgeSettings

    return EdgeSettings(
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


class ServerRole:
    """`shellwego server`: the control plane, optionally with the edge beside it."""

    def __init__(self, settings: Settings, *, edge: bool = True) -> None:
        from shellwego.services.bootstrap import build_context

        self.settings = settings
        self.ctx = build_context(settings)
        equip(self.ctx)
        self.caddy: Any = None
        extra: list[Callable[[], Coroutine[Any, Any, Any]]] = []
        if edge:
            from shellwego.controllers import edge as edge_sync
            from shellwego.edge.metrics import traffic_for_app
            from shellwego.edge.process import CaddyProcess

            self.caddy = CaddyProcess(edge_settings(settings))
            caddy = self.caddy

            async def traffic(app_id: str) -> dict[str, object]:
                return await traffic_for_app(caddy, app_id)

            self.ctx.extras["traffic"] = traffic
            extra.append(lambda: edge_sync.run(self.ctx, caddy, self.plane.stopping))
        self.plane = ControlPlane(self.ctx, extra_tasks=extra)

    async def start(self) -> str:
        from starlette.concurrency import run_in_threadpool

        token = await run_in_threadpool(ensure_join_token, self.ctx)
        if self.caddy is not None:
            await self.caddy.start()
        await self.plane.start()
        return token

    async def stop(self) -> None:
        await self.plane.stop()
        if self.caddy is not None:
            await self.caddy.stop()
