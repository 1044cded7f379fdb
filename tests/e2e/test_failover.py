"""Two control-plane replicas (`shellwego server`) on one PostgreSQL database and NATS, an
agent and an edge node that know both (`--server A,B`, SHELLWEGO_SERVER_URLS).

Replica A is killed (-9): the agent keeps heartbeating through B and its node is never
declared down; the edge node keeps serving meanwhile, and follows B's route table; a new
release made through B replaces the old instance, which its agent stops, and the edge node
stops routing to it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import httpx

from shellwego.services.tokens import JOIN_PREFIX, new_token
from support.cluster import NODE_DOWN_AFTER
from support.procs import alive

from .conftest import EXAMPLES, SHELLWEGO, free_port, platform_env
from .test_split_roles import NATS_URL, database, spawn, stop, wait_line  # noqa: F401


def test_an_agent_and_an_edge_node_fail_over_to_the_other_replica(
    tmp_path: Path,
    database: str,  # noqa: F811
) -> None:
    base = platform_env(tmp_path, "32000-32999")
    join = new_token(JOIN_PREFIX)
    shared = {
        **base,
        "DATABASE_URL": database,
        "NATS_URL": NATS_URL,
        "SHELLWEGO_JOIN_TOKEN": join,
        "SHELLWEGO_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    api_a, api_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{api_a}", f"http://127.0.0.1:{api_b}"

    def replica_env(name: str, api: int) -> dict[str, str]:
        return {
            **shared,
            "SHELLWEGO_DATA_DIR": str(tmp_path / name),
            "SHELLWEGO_API_PORT": str(api),
            "SHELLWEGO_HTTP_PORT": str(free_port()),
            "SHELLWEGO_HTTPS_PORT": str(free_port()),
        }

    edge_http = free_port()
    edge_env = {
        **base,
        "SHELLWEGO_DATA_DIR": str(tmp_path / "edge-node"),
        "SHELLWEGO_HTTP_PORT": str(edge_http),
        "SHELLWEGO_HTTPS_PORT": str(free_port()),
        "SHELLWEGO_JOIN_TOKEN": join,
        "SHELLWEGO_SERVER_URLS": f"{url_a},{url_b}",
    }
    agent_env = {**base, "SHELLWEGO_DATA_DIR": str(tmp_path / "node"), "SHELLWEGO_JOIN_TOKEN": join}
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b", "agent", "edge")}
    procs: list[subprocess.Popen[str]] = []
    pids: set[int] = set()
    try:
        a = spawn([SHELLWEGO, "server"], replica_env("a", api_a), logs["a"])
        procs.append(a)
        wait_line(logs["a"], r"ShellWeGo API listening", a)
        boot = httpx.post(
            f"{url_a}/v1/bootstrap",
            headers={"Authorization": f"Bearer {join}"},  # a server replica asks for it
            json={
                "user": {"email": "ops@example.com", "password": "a long enough password"},
                "organization": {"name": "Ops", "slug": "ops"},
            },
        )
        assert boot.status_code == 201, boot.text
        owner = boot.json()["token"]["token"]

        def cli(url: str, *args: str) -> str:
            done = subprocess.run(
                [SHELLWEGO, *args],
                env={
                    **base,
                    "SHELLWEGO_API_URL": url,
                    "SHELLWEGO_TOKEN": owner,
                    "SHELLWEGO_CONFIG_DIR": str(tmp_path / "cli"),
                },
                capture_output=True,
                text=True,
                timeout=300,
                cwd=tmp_path,
            )
            assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
            return done.stdout

        agent = spawn(
            [SHELLWEGO, "agent", "--server", f"{url_a},{url_b}"], agent_env, logs["agent"]
        )
        procs.append(agent)
        wait_line(logs["agent"], r"agent running", agent)
        edge = spawn([SHELLWEGO, "edge"], edge_env, logs["edge"])
        procs.append(edge)
        wait_line(logs["edge"], r"edge running", edge)

        cli(url_a, "apps", "create", "duo")
        cli(url_a, "deploy", str(EXAMPLES / "web-worker"), "-a", "duo")
        old = json.loads(cli(url_a, "ps", "-a", "duo", "--json"))
        pids |= {i["pid"] for i in old if i["pid"]}

        def get() -> httpx.Response:
            return httpx.get(
                f"http://127.0.0.1:{edge_http}/", headers={"Host": "duo.localhost"}, timeout=5
            )

        end = time.monotonic() + 30
        while "says hi" not in get().text:
            assert time.monotonic() < end, "the edge node never served duo"
            time.sleep(0.2)

        # the second replica joins (after the rollout: one rollout controller at a time)
        b = spawn([SHELLWEGO, "server", "--no-edge"], replica_env("b", api_b), logs["b"])
        procs.append(b)
        wait_line(logs["b"], r"ShellWeGo API listening", b)
        [node] = json.loads(cli(url_b, "nodes", "list", "--json"))
        assert node["status"] == "ready"

        # replica A dies: the agent and the edge node move to B, the app keeps serving,
        # and the node stays ready past the time after which it would be declared down
        stop(a, signal.SIGKILL)
        seen: set[str] = set()
        failed = 0
        # past the time after which the node would be declared down, and until heartbeats
        # through B have come (a failure timeout only: a loaded host is slower)
        past = time.monotonic() + NODE_DOWN_AFTER + 5
        give_up = past + 120
        while time.monotonic() < past or len(seen) < 3:
            assert time.monotonic() < give_up, f"heartbeats seen through B: {sorted(seen)}"
            r = get()
            failed += r.status_code != 200 or "says hi" not in r.text
            [now] = json.loads(cli(url_b, "nodes", "list", "--json"))
            assert now["status"] == "ready", now
            seen.add(now["last_heartbeat_at"])
            time.sleep(0.5)
        assert failed == 0
        assert f"switching to {url_b}" in logs["agent"].read_text()

        # a new release through B: its instance replaces the old one, which the agent
        # stops, and the edge node (following B) routes to the new one only
        cli(url_b, "config", "set", "-a", "duo", "GREETING=again")
        end = time.monotonic() + 60
        while True:  # the rollout is done; the old instance drains, then is gone
            new = json.loads(cli(url_b, "ps", "-a", "duo", "--json"))
            pids |= {i["pid"] for i in new if i["pid"]}
            if not {i["id"] for i in new} & {i["id"] for i in old}:
                break
            assert time.monotonic() < end, f"the old instances are still listed: {new}"
            time.sleep(0.5)
        end = time.monotonic() + 30
        while "says again" not in get().text:
            assert time.monotonic() < end, "the edge node never served the new release"
            time.sleep(0.2)
        for _ in range(20):
            assert "says again" in get().text
        # the old instances' processes are gone
        end = time.monotonic() + 30
        while any(alive(pid) for pid in {i["pid"] for i in old if i["pid"]}):
            assert time.monotonic() < end, "the agent never stopped the old instances"
            time.sleep(0.2)
        assert f"switching to {url_b}" in logs["edge"].read_text()
        assert join not in logs["agent"].read_text() + logs["edge"].read_text()
    finally:
        for proc in reversed(procs):
            stop(proc)
        # instances outlive the agent by design: stop the ones this test started
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
