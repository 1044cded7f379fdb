"""What the process runtime keeps on disk about an instance is private to the agent, and
never holds the release's environment (secret values live in the agent's memory only)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from shellwego.runtime.driver import InstanceState

from .conftest import Node, wait_until

SECRET = "hunter2-database-password"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_private(node: Node, instance_id: str) -> None:
    idir = node.state_dir / instance_id
    state = idir / "state.json"
    assert _mode(idir) == 0o700, oct(_mode(idir))
    assert _mode(state) == 0o600, oct(_mode(state))
    assert SECRET not in state.read_text()


async def test_state_dir_is_0700_and_state_json_0600(node: Node, open_umask: None) -> None:
    app = node.app("quiet", {"run.sh": "exec sleep 60\n"})
    env = {"DATABASE_PASSWORD": SECRET}
    # one instance directory left world-readable (e.g. by an earlier agent version)
    (node.state_dir / "old-1").mkdir(parents=True)
    os.chmod(node.state_dir / "old-1", 0o755)
    driver = node.driver()
    specs = [node.spec(i, app, "sh run.sh", env=env) for i in ("fresh-1", "old-1")]

    for spec in specs:
        status = await driver.start(spec)
        assert status.state == InstanceState.RUNNING
        _assert_private(node, spec.instance_id)

    await driver.stop("fresh-1", grace_seconds=1)  # state.json rewritten on stop
    _assert_private(node, "fresh-1")

    await driver.close()
    again = node.driver()
    recovered = {s.instance_id: s.state for s in await again.recover()}
    assert recovered == {"fresh-1": InstanceState.STOPPED, "old-1": InstanceState.RUNNING}
    await again.start(specs[0])  # rewritten by the new agent too

    async def running() -> bool:
        return (await again.inspect("fresh-1")).state == InstanceState.RUNNING

    await wait_until(running)
    for spec in specs:
        _assert_private(node, spec.instance_id)
        log = node.state_dir / spec.instance_id / "output.log"

        async def logged(log: Path = log) -> bool:
            return log.exists()

        await wait_until(logged)
        assert _mode(log) == 0o600  # apps log secrets too
