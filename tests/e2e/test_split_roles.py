"""Split roles: `shellwego server` on PostgreSQL with NATS, and a separate `shellwego agent`.

The agent is killed and restarted: its instances keep running and serving, it comes back
as the same node, and it re-adopts them without restarting any.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.cluster import NATS_URL, postgres_database
from support.procs import spawn, stop, wait_line

from .conftest import EXAMPLES, SHELLWEGO, free_port, platform_env


@pytest.fixture
def database() -> Iterator[str]:
    with postgres_database() as url:
        yield url


def test_server_and_agent_on_postgresql_survive_an_agent_crash(
    tmp_path: Path, database: str
) -> None:
    api, http, https = free_port(), free_port(), free_port()
    base = platform_env(tmp_path, "30000-30999")
    server_env = {
        **base,
        "DATABASE_URL": database,
        "NATS_URL": NATS_URL,
        "SHELLWEGO_DATA_DIR": str(tmp_path / "server"),
        "SHELLWEGO_API_PORT": str(api),
        "SHELLWEGO_HTTP_PORT": str(http),
        "SHELLWEGO_HTTPS_PORT": str(https),
    }
    agent_env = {**base, "SHELLWEGO_DATA_DIR": str(tmp_path / "node")}
    server = spawn([SHELLWEGO, "server"], server_env, tmp_path / "server.log")
    agent: subprocess.Popen[str] | None = None
    try:
        token_file = wait_line(tmp_path / "server.log", r"--join-token-file (\S+)", server)
        token = Path(token_file).read_text().strip()
        assert token not in (tmp_path / "server.log").read_text()
        url = f"http://127.0.0.1:{api}"
        boot = httpx.post(
            f"{url}/v1/bootstrap",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "user": {"email": "ops@example.com", "password": "a long enough password"},
                "organization": {"name": "Ops", "slug": "ops"},
            },
        )
        assert boot.status_code == 201, boot.text
        cli_env = {
            **base,
            "SHELLWEGO_API_URL": url,
            "SHELLWEGO_TOKEN": boot.json()["token"]["token"],
            "SHELLWEGO_CONFIG_DIR": str(tmp_path / "cli"),
        }

        def cli(*args: str) -> str:
            done = subprocess.run(
                [SHELLWEGO, *args],
                env=cli_env,
                capture_output=True,
                text=True,
                timeout=300,
                cwd=tmp_path,
            )
            assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
            return done.stdout

        agent_argv = [SHELLWEGO, "agent", "--server", url, "--join-token-file", token_file]
        agent = spawn(agent_argv, agent_env, tmp_path / "agent.log")
        wait_line(tmp_path / "agent.log", r"agent running", agent)

        cli("apps", "create", "duo")
        cli("deploy", str(EXAMPLES / "web-worker"), "-a", "duo")

        def get() -> httpx.Response:
            return httpx.get(f"http://127.0.0.1:{http}/", headers={"Host": "duo.localhost"})

        assert "web process of duo says hi" in get().text
        [before] = json.loads(cli("ps", "-a", "duo", "--json"))
        [node] = json.loads(cli("nodes", "list", "--json"))

        # the agent crashes: the instance keeps serving
        stop(agent, signal.SIGKILL)
        assert get().status_code == 200

        # restarted without a join token: the same node, the instance re-adopted as is
        agent = spawn([SHELLWEGO, "agent", "--server", url], agent_env, tmp_path / "agent2.log")
        wait_line(tmp_path / "agent2.log", r"agent running", agent)
        time.sleep(3)  # a few heartbeats and a reconcile pass
        [after] = json.loads(cli("ps", "-a", "duo", "--json"))
        assert (after["id"], after["pid"], after["restarts"]) == (
            before["id"],
            before["pid"],
            0,
        )
        assert after["healthy"] is True
        nodes = json.loads(cli("nodes", "list", "--json"))
        assert [n["id"] for n in nodes] == [node["id"]]
        assert get().status_code == 200
    finally:
        if agent is not None:
            stop(agent)
        stop(server)
        # instances outlive the agent by design; stop what this test started
        subprocess.run(["pkill", "-KILL", "-f", str(tmp_path / "node")], check=False)
