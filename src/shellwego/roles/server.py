"""The control plane: REST API plus its controllers, in one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn

from shellwego.api import create_app
from shellwego.build.artifacts import ArtifactStore
from shellwego.build.builder import Builder
from shellwego.controllers import loops
from shellwego.runtime.process import ProcessDriver
from shellwego.services.context import Context

log = logging.getLogger(__name__)


def equip(ctx: Context) -> None:
    """Attach the build system, artifact store and one-off runner to the context."""
    data = ctx.settings.data_dir
    (data / "tmp").mkdir(parents=True, exist_ok=True)
    ctx.extras["artifacts"] = ArtifactStore(data / "artifacts")
    ctx.extras["builder"] = Builder(data / "cache" / "build")
    ctx.extras["oneoff_driver"] = ProcessDriver(data / "oneoff" / "state")


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
        self.ctx.db.dispose()
