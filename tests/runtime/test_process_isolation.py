"""Limits and sandboxing, tested for real on whatever this host supports."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shellwego.errors import RuntimeUnavailable
from shellwego.runtime.driver import InstanceState, InstanceStatus
from shellwego.runtime.process import ProcessDriver

from .conftest import Node, wait_http, wait_until

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
try:
    results["state_dir"] = os.listdir(sys.argv[6])
except OSError as exc:
    results["state_dir"] = type(exc).__name__
print(json.dumps(results), flush=True)
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
        lines = [line.line async for line in driver.logs("prober-1")]
        assert not lines or lines[0].startswith("{"), lines
        return json.loads(lines[0]) if lines else None

    found = await wait_until(result)
    assert found["read_other_app"] == "FileNotFoundError"
    assert found["read_hidden"] == "FileNotFoundError"
    assert found["read_visible"] == "ok"
    assert found["write_readonly"] == "OSError"  # EROFS
    assert found["write_etc"] == "OSError"
    assert found["write_own_dir"] == "ok"
    assert found["write_tmp"] == "ok"
    assert found["state_dir"] in ("FileNotFoundError", "PermissionError", [])
    assert not (prober / "own.txt").exists()  # written to the instance's own layer
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


WHO = """
import json, os, sys
try:
    open(sys.argv[1]).read()
    secret = "read"
except OSError as exc:
    secret = type(exc).__name__
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                  "secret": secret}), flush=True)
import time
time.sleep(1000)
"""


@pytest.mark.parametrize("sandbox", [None, False], ids=["host-default", "unsandboxed"])
async def test_instances_of_a_root_agent_run_as_an_unprivileged_user(
    node: Node, host_dir: Path, sandbox: bool | None
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the agent is not root here: instances run as its own user")
    secret = host_dir / "root-only.key"
    secret.write_text("root's secret")
    secret.chmod(0o600)
    host_dir.chmod(0o755)
    driver = node.driver(sandbox=sandbox)
    app = node.app("who", {"who.py": WHO})
    spec = node.spec("who-1", app, f"python3 who.py {secret}")
    await driver.start(spec)

    async def report() -> dict[str, object] | None:
        lines = [line.line async for line in driver.logs("who-1")]
        return json.loads(lines[0]) if lines else None

    found = await wait_until(report)
    assert found == {"uid": 65534, "gid": 65534, "groups": [], "secret": "PermissionError"}
    # one-off commands too, and the instance user can write its own app directory
    done = await driver.exec(spec, ["sh", "-c", "id -u; id -g; cat " + str(secret)])
    assert done.exit_code == 1
    assert done.output.splitlines()[:2] == ["65534", "65534"]
    assert "Permission denied" in done.output
    written = await driver.exec(spec, ["sh", "-c", "echo x > who.py && mkdir -p log && ls"])
    assert (written.exit_code, written.output) == (0, "log\nwho.py\n")


LOOKER = """
import json, os, sys
def attempt(path):
    try:
        return sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read()
    except OSError as exc:
        return type(exc).__name__
print(json.dumps({path: attempt(path) for path in sys.argv[1:]}), flush=True)
import time
time.sleep(1000)
"""


async def test_an_agents_instance_sees_neither_platform_agent_nor_other_apps(
    node: Node, host_dir: Path
) -> None:
    """The layout of `shellwego agent` (and `up`): data dir, agent state, slugs, instances."""
    data = host_dir / "data"
    agent = data / "agent"
    slugs = agent / "slugs"
    x, y = slugs / ("a" * 64), slugs / ("b" * 64)
    for path, text in {
        data / "master.key": "MASTER",
        data / "shellwego.db": "DATABASE",
        agent / "node.json": "NODE-TOKEN",
        x / "looker.py": LOOKER,
        y / "secret.txt": "OTHER-APP",
    }.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    slugs.chmod(0o700)  # as the slug cache keeps it
    driver = ProcessDriver(agent / "instances", hidden_paths=[data, agent], backoff_base=30)
    if "bwrap" not in driver.capabilities().isolation:
        pytest.skip(f"no sandbox on this host: {driver.capabilities().notes}")
    other = node.spec("y-1", y, "python3 -c 'import time; time.sleep(1000)'")
    looked = [
        data / "master.key", data / "shellwego.db", agent / "node.json", y / "secret.txt",
        agent / "instances", agent / "instances" / "y-1" / "app" / "secret.txt", slugs,
    ]  # fmt: skip
    spec = node.spec("x-1", x, "python3 looker.py " + " ".join(map(str, looked)))
    try:
        await driver.start(other)
        await driver.start(spec)

        async def report() -> dict[str, object] | None:
            lines = [line.line async for line in driver.logs("x-1")]
            return json.loads(lines[0]) if lines else None

        found = await wait_until(report)
        assert set(found.values()) <= {"FileNotFoundError", "PermissionError"}, found
    finally:
        for instance in ("x-1", "y-1"):
            await driver.stop(instance, grace_seconds=1)
            await driver.remove(instance)
        await driver.close()


def test_unsandboxed_instances_must_be_able_to_reach_their_app_directories(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("instances run as the agent's own user here")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(RuntimeUnavailable) as raised:
        ProcessDriver(private / "instances", sandbox=False)
    assert raised.value.detail.startswith(
        f"instances run as uid 65534 without a sandbox and cannot reach their app "
        f"directories under {private / 'instances'}: "
    )
    assert "not searchable by them" in raised.value.detail
    ProcessDriver(private / "instances", sandbox=False, run_as=None)  # as root: no need


async def test_a_private_data_dir_is_opened_search_only_for_unsandboxed_instances(
    node: Node,
) -> None:
    """The platform's data directory is 0700; unsandboxed instances of another user reach
    their app directory by its host path, so the driver opens the way from the data
    directory down to its state: search-only (0711), never listable."""
    if os.geteuid() != 0:
        pytest.skip("instances run as the agent's own user here")
    node.root.chmod(0o700)
    driver = node.driver(sandbox=False, reachable_from=node.root)
    assert [oct(stat.S_IMODE(p.stat().st_mode)) for p in (node.root, node.state_dir)] == [
        "0o711",
        "0o711",
    ]
    assert stat.S_IMODE(node.apps.stat().st_mode) == 0o700  # not on the way: left private
    spec = node.spec("reach-1", node.app("reach"))
    try:
        status = await driver.start(spec)
        assert status.state == InstanceState.RUNNING
        assert b"PORT" in await wait_http(spec.port)
    finally:
        await driver.stop("reach-1", grace_seconds=1)
        await driver.remove("reach-1")
