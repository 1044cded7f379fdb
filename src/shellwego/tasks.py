"""Background tasks that nobody awaits, held until they finish.

The event loop keeps only weak references to its tasks, so a task nobody holds can be
collected before it is done; the set here holds each one until it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_RUNNING: set[asyncio.Task[Any]] = set()


def spawn_background(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``coro`` as a task of the running loop, kept alive until it is done."""
    task = asyncio.get_running_loop().create_task(coro)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    return task
