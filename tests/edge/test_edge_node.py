"""A real control plane (`shellwego server`, its own edge), a real agent running a deployed
app, and a separate edge node (`shellwego edge`): per-app traffic figures through the
metrics endpoint and `shellwego top`; the edge node follows the control plane's table,
answers Caddy's ask, and keeps serving while the control plane is down."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.conftest import EXAMPLES, SHELLWEGO, free_port, platform_env
from e2e.test_split_roles import spawn, stop, wait_line
from shellwego.roles.edge import WAIT_SECONDS
from support.waiting import POLL

from .realparts import Api

N = 40  # requests sent through the edge
TRAFFIC = [
    "requests", "status_2xx", "status_3xx", "status_4xx", "status_5xx",
    "latency_p50_ms", "latency_p99_ms",
]  # fmt: skip


@dataclass
class Cluster:
    tmp: Path
    base_env: dict[str, str]
    api_url: str
    server_http: int
    join_token: str
    cli_env: dict[str, str]
    server: subprocess.Popen[str]
    agent: subprocess.Popen[str]
    owner: Api
    instance_pids: list[int] = field(default_factory=list)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [SHELLWEGO, *args],
            env=self.cli_env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=self.tmp,
        )
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done.stdout

    def api(self, path: str) -> Any:
        return self.owner.ok("GET", path)


def get(port: int, host: str, path: str = "/") -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host}, timeout=10)


def until(check: Any, what: str, deadline: float = 15) -> Any:
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
            if last:
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{what}; last: {last!r}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    api, http, https = free_port(), free_port(), free_port()
    base = platform_env(tmp, "31000-31999")
    server_env = {
        **base,
        "SHELLWEGO_DATA_DIR": str(tmp / "server"),
        "SHELLWEGO_API_PORT": str(api),
        "SHELLWEGO_HTTP_PORT": str(http),
        "SHELLWEGO_HTTPS_PORT": str(https),
        # blocking queries answer a change at once only through a wake-up (see below)
        "SHELLWEGO_BLOCKING_RECHECK": f"{POLL:g}",
    }
    server = spawn([SHELLWEGO, "server"], server_env, tmp / "server.log")
    agent: subprocess.Popen[str] | None = None
    cluster: Cluster | None = None
    try:
        token_file = wait_line(tmp / "server.log", r"--join-token-file (\S+)", server)
        token = Path(token_file).read_text().strip()
        url = f"http://127.0.0.1:{api}"
        owner = Api.bootstrap(httpx.Client(base_url=url), token)
        agent_env = {**base, "SHELLWEGO_DATA_DIR": str(tmp / "node")}
        agent = spawn(
            [SHELLWEGO, "agent", "--server", url, "--join-token-file", token_file],
            agent_env,
            tmp / "agent.log",
        )
        wait_line(tmp / "agent.log", r"agent running", agent)
        cluster = Cluster(
            tmp=tmp,
            base_env=base,
            api_url=url,
            server_http=http,
            join_token=token,
            cli_env={
                **base,
                "SHELLWEGO_API_URL": url,
                "SHELLWEGO_TOKEN": owner.token,
                "SHELLWEGO_CONFIG_DIR": str(tmp / "cli"),
            },
            server=server,
            agent=agent,
            owner=owner,
        )
        cluster.cli("apps", "create", "duo")
        cluster.cli("deploy", str(EXAMPLES / "web-worker"), "-a", "duo")
        cluster.cli("apps", "create", "idle")  # never deployed: the edge answers 503
        cluster.instance_pids = [
            i["pid"] for i in json.loads(cluster.cli("ps", "-a", "duo", "--json")) if i["pid"]
        ]
        yield cluster
    finally:
        if agent is not None:
            stop(agent)
        stop(server)
        if cluster is not None:
            cluster.owner.client.close()
        # instances outlive the agent by design: stop the ones this test started
        for pid in cluster.instance_pids if cluster else []:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_traffic_figures_reach_the_metrics_endpoint_and_top(cluster: Cluster) -> None:
    until(  # the new app's route is loaded: its first 503 (unknown hosts are not counted)
        lambda: get(cluster.server_http, "idle.localhost").status_code == 503,
        "the edge never routed idle",
    )
    for _ in range(N):
        r = get(cluster.server_http, "duo.localhost")
        assert r.status_code == 200 and "says hi" in r.text
    for _ in range(3):
        assert get(cluster.server_http, "idle.localhost").status_code == 503
    assert get(cluster.server_http, "duo.localhost", "/").status_code == 200

    def counted() -> Any:
        duo = cluster.api("/v1/apps/duo/metrics")
        return duo if duo["requests"] >= N + 1 else None

    duo = until(counted, f"the metrics endpoint never counted {N + 1} requests of duo")
    assert duo["status_2xx"] == duo["requests"] and duo["status_5xx"] == 0
    assert duo["instances"] == 1
    assert duo["latency_p50_ms"] is not None
    assert duo["latency_p50_ms"] <= duo["latency_p99_ms"]
    idle = until(
        lambda: (m := cluster.api("/v1/apps/idle/metrics"))["requests"] >= 4 and m,
        "the metrics endpoint never counted the 503s of idle",
    )
    assert (idle["requests"], idle["status_5xx"], idle["status_2xx"]) == (4, 4, 0)

    top = {row["app"]: row for row in json.loads(cluster.cli("top", "--json"))}
    for app, figures in (("duo", duo), ("idle", idle)):  # CPU and memory move; traffic not
        assert {k: top[app][k] for k in TRAFFIC} == {k: figures[k] for k in TRAFFIC}
    table = cluster.cli("top", "--once")
    [duo_line] = [line for line in table.splitlines() if line.startswith("duo")]
    [idle_line] = [line for line in table.splitlines() if line.startswith("idle")]
    # … REQUESTS 5XX <p50> ms <p99> ms
    assert duo_line.split()[-6:-4] == [str(duo["requests"]), "0"], table
    assert idle_line.split()[-6:-4] == ["4", "4"], table


def test_an_edge_node_follows_the_table_and_serves_while_the_control_plane_is_down(
    cluster: Cluster,
) -> None:
    http, https = free_port(), free_port()
    edge_env = {
        **cluster.base_env,
        "SHELLWEGO_DATA_DIR": str(cluster.tmp / "edge-node"),
        "SHELLWEGO_HTTP_PORT": str(http),
        "SHELLWEGO_HTTPS_PORT": str(https),
    }
    log = cluster.tmp / "edge.log"
    # the join token from the environment: never on the command line
    argv = [SHELLWEGO, "edge", "--server", cluster.api_url]
    edge = spawn(argv, {**edge_env, "SHELLWEGO_JOIN_TOKEN": cluster.join_token}, log)
    try:
        ask_url = wait_line(log, r"ask endpoint (http://127\.0\.0\.1:\d+/ask)", edge)
        until(
            lambda: "says hi" in get(http, "duo.localhost").text,
            "the edge node never served duo",
        )
        assert get(http, "idle.localhost").status_code == 503
        assert get(http, "nobody.localhost").status_code == 404

        # a change reaches the edge node through the blocking query, woken at once: the
        # server re-reads only every POLL seconds and the edge node's query waits
        # WAIT_SECONDS, so a route within half of that came through a wake-up
        cluster.cli("apps", "create", "later")
        until(
            lambda: get(http, "later.localhost").status_code == 503,
            "the edge node was not woken by the new app",
            deadline=WAIT_SECONDS / 2,
        )

        def ask(name: str) -> int:
            return httpx.get(ask_url, params={"domain": name}, timeout=10).status_code

        assert ask("duo.localhost") == 200
        assert ask("nobody.example") == 403

        # the control plane goes away: the edge node keeps its table and its answers
        stop(cluster.server)
        assert cluster.server.poll() is not None
        for _ in range(10):
            r = get(http, "duo.localhost")
            assert r.status_code == 200 and "says hi" in r.text
        assert ask("duo.localhost") == 200
        assert ask("nobody.example") == 403
        assert edge.poll() is None
    finally:
        stop(edge)
    assert cluster.join_token not in log.read_text()
