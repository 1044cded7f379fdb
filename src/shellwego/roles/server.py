"""The control plane: REST API plus its controllers, in one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn

from shellwego.api import create_app
from shellwego.build.artifacts import open_store
from shellwego.build.builder import Builder
from shellwego.controllers.leader import Leadership, singletons
from shellwego.errors import ShellWeGoError
from shellwego.files import make_private_dir, make_private_tree, write_private
from shellwego.runtime.layer import LAYER_DIRS
from shellwego.runtime.network import NodeNetwork, network_unavailable
from shellwego.runtime.network.node import RESOLV_CONF
from shellwego.runtime.process import ProcessDriver
from shellwego.services import masterkey, nodes
from shellwego.services.context import Context
from shellwego.services.tokens import JOIN_PREFIX, new_token
from shellwego.settings import Settings

log = logging.getLogger(__name__)


# What make_private_tree leaves alone: the apps' own trees, which keep the modes their
# build gave them (0644/0755, owned by the instance user, who reads them): release slugs
# and instances' writable layers. The directories holding them are private.
AGENT_APP_TREES = (
    "slugs/*",  # under an agent's state directory
    *(f"instances/*/{layer}" for layer in LAYER_DIRS),
    # the nameservers instances use, their /etc/resolv.conf (bound read-only): no secret
    f"network/{RESOLV_CONF}",
)
APP_TREES = (
    *(f"agent/{tree}" for tree in AGENT_APP_TREES),
    "oneoff/slugs/*",
    *(f"oneoff/state/*/{layer}" for layer in LAYER_DIRS),
    f"oneoff/network/{RESOLV_CONF}",
)


def private_data_dir(settings: Settings) -> None:
    """The data directory and everything the platform wrote in it: its owner's alone
    (0700/0600). An older install's 0644 database and 0755 directories are fixed here,
    on start."""
    make_private_tree(settings.data_dir, leave=APP_TREES)


def equip(ctx: Context) -> None:
    """Attach the build system, artifact store and one-off runner to the context."""
    data = ctx.settings.data_dir
    make_private_dir(data / "tmp")
    # slugs and git repositories: the data directory's, or a bucket every replica shares
    store = open_store(ctx.settings)
    ctx.artifacts = store
    publish = getattr(store, "publish_cached", None)
    if publish is not None:  # slugs built here before the bucket was shared go up once
        try:
            published = publish()
        except ShellWeGoError as exc:
            log.warning("slugs built here could not be put in the shared store: %s", exc)
        else:
            if published:
                log.info("put %d slug(s) built here in the shared artifact store", published)
    # one-off commands and build steps, each in a network namespace of its own for its run,
    # on a node network that exists only while one runs
    network = node_network(ctx.settings, data / "oneoff" / "network", ephemeral=True)
    # build steps run the app's own install code: they never see the platform's data, and
    # have the same process and open-file limits as the app's instances
    ctx.builder = Builder(
        data / "cache" / "build",
        hidden_paths=[data],
        pids_limit=ctx.settings.pids_limit,
        nofile_limit=ctx.settings.nofile_limit,
        network=network,
    )
    # so do one-off commands: they see their release's slug (through a private writable
    # layer) and nothing else of the data directory (master key, database, artifacts)
    make_private_dir(data / "oneoff" / "slugs")  # what they run from, out of their reach
    ctx.oneoff_driver = process_driver(
        ctx.settings, data / "oneoff" / "state", [data], reachable_from=data, network=network
    )


def node_network(settings: Settings, state: Path, *, ephemeral: bool = False) -> NodeNetwork | None:
    """The node network kept in ``state``, unless the operator chose the host's network
    or this host cannot have one (then said in the log). ``ephemeral``: see
    :class:`NodeNetwork`."""
    if settings.instance_network != "namespace":
        return None
    why = network_unavailable()
    if why is not None:
        log.warning("%s", why)
        return None
    return NodeNetwork(state, settings.network, ephemeral=ephemeral)


def process_driver(
    settings: Settings,
    state: Path,
    hidden: Sequence[Path],
    *,
    reachable_from: Path | None,
    network: NodeNetwork | None = None,
) -> ProcessDriver:
    """The process runtime with the platform's limits; ``hidden``: what its instances must
    not see; ``reachable_from``: see :class:`ProcessDriver`. Its instances get network
    namespaces on ``network``, by default a node network kept beside ``state`` (see
    :func:`node_network`)."""
    if network is None:
        network = node_network(settings, state.parent / "network")
    return ProcessDriver(
        state,
        hidden_paths=hidden,
        pids_limit=settings.pids_limit,
        nofile_limit=settings.nofile_limit,
        network=network,
        reachable_from=reachable_from,
    )


class ControlPlane:
    """API server + the cluster-wide loops (rollout, liveness, housekeeping), run while
    this replica leads (``controllers/leader.py``); ``run()`` until ``stop()``."""

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
        self.leadership = Leadership(ctx, singletons())

    async def start(self) -> None:
        await self.ctx.bus.start()
        self.tasks.append(asyncio.create_task(self.server.serve(), name="api"))
        while not self.server.started:
            if self.tasks[0].done():
                self.tasks[0].result()  # raises the bind error
            await asyncio.sleep(0.02)
        self.tasks.append(
            asyncio.create_task(self.leadership.run(self.stopping), name="leadership")
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
        oneoff = self.ctx.oneoff_driver
        if isinstance(oneoff, ProcessDriver):  # one-off commands end with the API
            await oneoff.close()
        self.ctx.db.dispose()


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

        # the first owner is made by `shellwego bootstrap`, or through the API with the
        # join token: never by whoever reaches a fresh replica first
        settings = replace(settings, open_bootstrap=False)
        self.settings = settings
        private_data_dir(settings)
        self.ctx = build_context(settings)
        masterkey.check(self.ctx.db, self.ctx.envelope.provider, self.ctx.clock)
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

            self.ctx.traffic = traffic
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
