"""Fixtures for the edge tests: a real Caddy under supervision, real upstream servers, a
real DNS server, and the API on a real database (both backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shellwego.api import create_app
from shellwego.edge.process import CaddyProcess
from shellwego.services.context import Context
from shellwego.settings import Settings
from support.dns_server import DnsServer

from .realparts import Api, Backend, settings_for


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    made = {name: Backend(name) for name in ("A", "B")}
    yield made
    for b in made.values():
        b.close()


@pytest.fixture
async def caddy(tmp_path: Path) -> AsyncIterator[CaddyProcess]:
    proc = CaddyProcess(settings_for(tmp_path / "caddy"))
    await proc.start()
    yield proc
    await proc.stop()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    yield server
    server.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, dns_server: DnsServer) -> Settings:
    """The platform's settings on both backends, verifying domains against ``dns_server``."""
    return Settings.from_env(
        {"SHELLWEGO_DNS_RESOLVER": dns_server.address},
        data_dir=tmp_path / "data",
        database_url=database_url,
    )


@pytest.fixture
def api(ctx: Context) -> Iterator[Api]:
    with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
        yield Api.bootstrap(client)
