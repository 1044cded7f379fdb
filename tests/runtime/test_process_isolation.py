"""Limits and sandboxing, tested for real on whatever this host supports."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shellwego.runtime.driver import InstanceState, InstanceStatus

from .conftest import Node, wait_until

PROBE = """
import json, os, sys, time
other, hidden, visible, readonly, tmpname = sys.argv[1:6]
results = {}
def attempt(name, action):
    try:
        action()
        results[name] = "ok"
    except OSError as exc:
        results[name] = type(exc).__name__
def write(path):
    with open(path, "w") as fh:
        fh.write("probe")
attempt("read_other_app", lambda: open(other).read())
attempt("read_hidden", lambda: open(hidden).read())
attempt("read_visible", lambda: open(visible).read())
attempt("write_readonly", lambda: write(readonly))
attempt("write_etc", lambda: write("/etc/shellwego-probe"))
attempt("write_own_dir", lambda: write("own.txt"))
attempt("write_tmp", lambda: write("/tmp/" + tmpname))
results["state_dir"] = os.path.isdir(sys.argv[6]) and os.listdir(sys.argv[6])
with open("result.tmp", "w") as fh:
    json.dump(results, fh)
os.replace("result.tmp", "result.json")
time.sleep(1000)
"""


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory outside /tmp (which the sandbox replaces), removed afterwards."""
    path = Path("/var/tmp") / f"shellwego-test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_sandbox_confines_an_instance_to_its_own_app_dir(node: Node, host_dir: Path) -> None:
    hidden = host_dir / "hidden"
    hidden.mkdir()
    (hidden / "key").write_text("hidden key")
    (host_dir / "visible.txt").write_text("visible")
    driver = node.driver(hidden_paths=[hidden])
    if "bwrap" not in driver.capabilities().isolation:
        pytest.skip(f"no sandbox on this host: {driver.capabilities().notes}")

    other = node.app("other", {"secret.txt": "other app's secret"})
    prober = node.app("prober", {"probe.py": PROBE})
    tmpname = f"probe-{uuid.uuid4().hex[:8]}"
    args = [other / "secret.txt", hidden / "key", host_dir / "visible.txt"]
    args += [host_dir / "written.txt", Path(tmpname), node.state_dir]
    command = "python3 probe.py " + " ".join(str(a) for a in args)
    await driver.start(node.spec("prober-1", prober, command))

    async def result() -> dict[str, object] | None:
        path = prober / "result.json"
        return json.loads(path.read_text()) if path.exists() else None

    found = await wait_until(result)
    assert found["read_other_app"] == "FileNotFoundError"
    assert found["read_hidden"] == "FileNotFoundError"
    assert found["read_visible"] == "ok"
    assert found["write_readonly"] == "OSError"  # EROFS
    assert found["write_etc"] == "OSError"
    assert found["write_own_dir"] == "ok"
    assert found["write_tmp"] == "ok"
    assert found["state_dir"] in (False, [])
    assert (prober / "own.txt").read_text() == "probe"
    assert not (host_dir / "written.txt").exists()
    assert not Path("/tmp", tmpname).exists()  # the instance's /tmp is its own


async def test_instance_over_its_memory_limit_is_killed_and_counted_as_a_crash(
    node: Node,
) -> None:
    driver = node.driver(backoff_base=30.0)
    if not driver.capabilities().memory_limit:
        pytest.skip(f"no cgroup memory limits on this host: {driver.capabilities().notes}")
    hog = "data = b'x' * (256 << 20)\nprint('survived', flush=True)\n"
    app = node.app("hog", {"hog.py": hog})
    await driver.start(node.spec("hog-1", app, "python3 hog.py", memory_bytes=64 << 20))

    async def crashed() -> InstanceStatus | None:
        status = await driver.inspect("hog-1")
        return status if status.state == InstanceState.BACKOFF else None

    status = await wait_until(crashed)
    assert status.exit_code == 137
    assert status.last_error is not None
    assert "out-of-memory" in status.last_error and str(64 << 20) in status.last_error
    assert "survived" not in [line.line async for line in driver.logs("hog-1")]


async def test_cpu_limit_holds_a_busy_loop_to_its_share(node: Node) -> None:
    driver = node.driver()
    if not driver.capabilities().cpu_limit:
        pytest.skip(f"no cgroup CPU limits on this host: {driver.capabilities().notes}")
    app = node.app("busy", {"busy.py": "while True:\n    pass\n"})
    await driver.start(node.spec("busy-1", app, "python3 busy.py", cpu_millis=200))
    await asyncio.sleep(0.3)
    before = await driver.stats("busy-1")
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.sleep(1.5)
    after = await driver.stats("busy-1")
    share = (after.cpu_usage_ns - before.cpu_usage_ns) / 1e9 / (loop.time() - began)
    assert 0.02 < share < 0.35
