"""Each instance writes to a layer of its own over its slug, which stays as it was built:
the ephemeral filesystem of Heroku-style platforms, on a slug shared by many instances."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from shellwego.runtime.driver import InstanceState, InstanceStatus
from shellwego.runtime.process import ProcessDriver

from .conftest import Node, wait_until

# Changes a shipped file, adds files (also in a shipped subdirectory), reports what it sees.
WRITER = """
import json, os, sys, time
me = sys.argv[1]
with open("data.txt", "a") as fh:
    fh.write(me + "\\n")
with open("static/" + me + ".txt", "w") as fh:
    fh.write(me)
with open("new-" + me, "w") as fh:
    fh.write(me)
seen = {"data": open("data.txt").read(), "static": sorted(os.listdir("static")),
        "root": sorted(n for n in os.listdir(".") if n.startswith("new-"))}
print(json.dumps(seen), flush=True)
time.sleep(1000)
"""


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under ``root``: its mode and a hash of its content."""
    found = {}
    for path in sorted(root.rglob("*")):
        data = path.read_bytes() if path.is_file() else b""
        found[str(path.relative_to(root))] = (
            path.lstat().st_mode,
            hashlib.sha256(data).hexdigest(),
        )
    return found


async def _seen(driver: ProcessDriver, instance_id: str, count: int = 1) -> list[Any]:
    """The reports of an instance's runs (one per start), once there are ``count``."""

    async def reports() -> list[Any] | None:
        lines = [line.line async for line in driver.logs(instance_id)]
        found = [json.loads(line) for line in lines if line.startswith("{")]
        return found if len(found) >= count else None

    return list(await wait_until(reports))


async def test_instances_of_one_slug_write_privately_and_the_slug_stays_as_built(
    node: Node,
) -> None:
    slug = node.app(
        "shared", {"writer.py": WRITER, "data.txt": "shipped\n", "static/app.css": "body{}\n"}
    )
    before = _snapshot(slug)
    driver = node.driver(backoff_base=0.1)
    await driver.start(node.spec("a-1", slug, "python3 writer.py a"))
    await driver.start(node.spec("b-1", slug, "python3 writer.py b"))

    [a] = await _seen(driver, "a-1")
    [b] = await _seen(driver, "b-1")
    assert a == {"data": "shipped\na\n", "static": ["a.txt", "app.css"], "root": ["new-a"]}
    assert b == {"data": "shipped\nb\n", "static": ["app.css", "b.txt"], "root": ["new-b"]}
    assert _snapshot(slug) == before

    # a restarted instance starts again from the slug: its earlier writes are gone
    status = await driver.inspect("a-1")
    assert status.pid is not None
    os.killpg(status.pid, signal.SIGKILL)

    async def restarted() -> InstanceStatus | None:
        current = await driver.inspect("a-1")
        return current if current.restarts == 1 and current.state == InstanceState.RUNNING else None

    await wait_until(restarted)
    again = await _seen(driver, "a-1", count=2)
    assert again[-1] == a
    assert _snapshot(slug) == before


async def test_a_one_off_command_writes_to_a_layer_of_its_own(node: Node) -> None:
    slug = node.app("tasks", {"data.txt": "shipped\n"})
    before = _snapshot(slug)
    driver = node.driver()
    spec = node.spec("tasks-1", slug)
    script = "echo changed >> data.txt && echo made > made.txt && cat data.txt made.txt"
    first = await driver.exec(spec, ["sh", "-c", script])
    assert (first.exit_code, first.output) == (0, "shipped\nchanged\nmade\n")
    second = await driver.exec(spec, ["sh", "-c", "cat data.txt; ls"])
    assert (second.exit_code, second.output) == (0, "shipped\ndata.txt\n")
    assert _snapshot(slug) == before
    assert sorted(p.name for p in node.state_dir.iterdir()) == []  # layers discarded
