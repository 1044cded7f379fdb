"""Fixtures for the edge tests: a real Caddy under supervision, real upstream servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shellwego.edge.process import CaddyProcess

from .realparts import Backend, settings_for


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
