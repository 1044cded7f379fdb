"""A real control plane (the FastAPI app under uvicorn, on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from shellwego.api import create_app
from shellwego.models import OrganizationCreate, UserCreate
from shellwego.services import auth, nodes
from shellwego.services.context import Context
from shellwego.services.tokens import JOIN_PREFIX, new_token


class ArtifactDir:
    """Slug tarballs by digest, as the control plane's artifact store serves them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / f"{digest}.tar.gz"

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def add(self, files: dict[str, bytes]) -> str:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        blob = buf.getvalue()
        digest = hashlib.sha256(blob).hexdigest()
        self.path(digest).write_bytes(blob)
        return digest


@dataclass
class Plane:
    url: str
    ctx: Context
    join_token: str
    operator_token: str
    organization_id: str
    user_id: str
    artifacts: ArtifactDir


async def wait_for(check: Callable[[], object], timeout: float = 5.0, step: float = 0.02) -> float:
    """Poll ``check`` (sync or async) until truthy; returns the seconds it took."""
    start = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)


@pytest.fixture
async def plane(ctx: Context, tmp_path: Path) -> AsyncIterator[Plane]:
    artifacts = ArtifactDir(tmp_path / "artifacts")
    ctx.artifacts = artifacts
    boot = await asyncio.to_thread(
        auth.bootstrap,
        ctx,
        UserCreate(email="ops@example.com", name="Ops", password="correct horse battery"),
        OrganizationCreate(name="Ops", slug="ops"),
    )
    join = await asyncio.to_thread(nodes.create_join_token, ctx, "test", new_token(JOIN_PREFIX))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(ctx),
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_for(lambda: server.started or task.done())
    assert server.started, "the control plane did not start"
    try:
        yield Plane(
            url=f"http://127.0.0.1:{port}",
            ctx=ctx,
            join_token=join,
            operator_token=boot.token.secret,
            organization_id=boot.organization.id,
            user_id=boot.user.id,
            artifacts=artifacts,
        )
    finally:
        server.should_exit = True
        server.force_exit = True  # agents are gone; do not wait out their long polls
        await task
        sock.close()
