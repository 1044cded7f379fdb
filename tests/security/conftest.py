"""Fixtures of the security tests: an in-process API on a frozen clock, reached from
chosen source addresses (both backends); real process-runtime nodes and node networks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shellwego.api import create_app
from shellwego.clock import FrozenClock
from shellwego.services.context import Context
from support.hostile_build import sentinels, work  # noqa: F401  (fixtures)
from support.netns import networks  # noqa: F401  (a fixture)
from support.scratch_node import node, open_umask  # noqa: F401  (fixtures)

PASSWORD = "correct horse battery staple"

Connect = Callable[[str], TestClient]


@pytest.fixture
def clock(ctx: Context) -> FrozenClock:
    clock = FrozenClock()
    ctx.clock = clock
    return clock


@pytest.fixture
def api(ctx: Context, clock: FrozenClock) -> FastAPI:
    return create_app(ctx)


@pytest.fixture
def connect(api: FastAPI) -> Iterator[Connect]:
    """``connect(address)``: a client whose requests come from ``address``."""
    clients: list[TestClient] = []

    def make(address: str) -> TestClient:
        client = TestClient(api, raise_server_exceptions=False, client=(address, 50000))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def bootstrap(client: TestClient, email: str = "owner@example.com") -> dict[str, str]:
    """The first organization and its owner; the owner's bearer header."""
    r = client.post(
        "/v1/bootstrap",
        json={
            "user": {"email": email, "password": PASSWORD, "name": "Owner"},
            "organization": {"name": "Acme", "slug": "acme"},
        },
    )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']['token']}"}
