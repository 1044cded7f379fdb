"""Fixtures of the controller tests: a frozen clock and a two-node world, both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shellwego.clock import FrozenClock
from shellwego.services.bootstrap import build_context
from shellwego.services.context import Context
from shellwego.settings import Settings

from .world import World


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def rctx(settings: Settings, clock: FrozenClock) -> Iterator[Context]:
    context = build_context(settings, clock=clock, migrate=False)
    context.db.reset()
    yield context
    context.db.reset()
    context.db.dispose()


@pytest.fixture
def world(rctx: Context, clock: FrozenClock) -> World:
    return World(rctx, clock)
