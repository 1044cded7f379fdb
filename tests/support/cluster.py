"""A ShellWeGo cluster on one host, as an operator would run it on several: `shellwego
server` replicas on one PostgreSQL database, NATS and one S3 bucket (the shared artifact
store), agents each in a network namespace of its own (reaching the replicas through the
namespace's veth, as a worker node reaches them over its network), and an edge node that
knows every replica. Root only (network namespaces). Used by tests/e2e/test_cluster.py and
bench/cluster_failover.py."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import psycopg

from shellwego.crypto.keys import key_id_of
from shellwego.runtime.network.subnet import host_networks
from shellwego.services.tokens import JOIN_PREFIX, new_token

from .load import Load, LoadResult
from .net import free_port
from .netns import Outside, ip
from .procs import SHELLWEGO, spawn, stop, wait_line

PG_ADMIN_URL = os.environ.get(
    "SHELLWEGO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NATS_URL = os.environ.get("SHELLWEGO_TEST_NATS_URL", "nats://127.0.0.1:4222")
NODE_DOWN_AFTER = 15.0  # the control plane's default (Settings.node_down_after_seconds)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new PostgreSQL database (its URL), dropped afterwards."""
    name = f"shellwego_e2e_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def s3_bucket() -> Iterator[tuple[str, str]]:
    """A local S3 server (moto's) on a port the OS picks, and a bucket on it:
    (endpoint, bucket). Credentials: any (``testing``)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the S3 server's access log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        bucket = f"swg-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=bucket)
        yield endpoint, bucket
    finally:
        server.stop()


def until(check: Callable[[], object], deadline: float, what: str) -> float:
    """Seconds until ``check()`` is true; fails after ``deadline`` seconds (a generous
    failure timeout, never a measurement)."""
    start = time.monotonic()
    last: object = None
    while True:
        try:
            if check():
                return time.monotonic() - start
        except (httpx.HTTPError, AssertionError, ValueError) as exc:
            last = exc
        if time.monotonic() - start > deadline:
            raise AssertionError(f"{what}: not within {deadline:.0f} s (last error: {last!r})")
        time.sleep(0.1)


class Cluster:
    """Processes and links started on demand; :meth:`close` stops every one of them and
    every instance the agents started (instances outlive their agent by design)."""

    def __init__(self, home: Path, base: dict[str, str], database: str, s3: tuple[str, str]):
        self.home = home
        self.base = base
        self.join = new_token(JOIN_PREFIX)
        self.join_file = home / "join-token"
        self.join_file.write_text(self.join + "\n")
        self.join_file.chmod(0o600)
        key = secrets.token_bytes(32)
        self.key_file = home / "master.key"
        self.key_file.write_text(
            json.dumps(
                {
                    "keys": {key_id_of(key): base64.b64encode(key).decode()},
                    "current": key_id_of(key),
                }
            )
        )
        self.key_file.chmod(0o600)
        endpoint, bucket = s3
        self.shared = {
            **base,
            "DATABASE_URL": database,
            "NATS_URL": NATS_URL,
            "SHELLWEGO_MASTER_KEY_FILE": str(self.key_file),
            "SHELLWEGO_ARTIFACT_STORE": f"s3://{bucket}/cluster",
            "SHELLWEGO_S3_ENDPOINT": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "SHELLWEGO_JOIN_TOKEN": self.join,
        }
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.runs: dict[str, int] = {}
        self.api_ports: dict[str, int] = {}
        self.links: dict[str, Outside] = {}
        self.token = ""
        self.edge_http = 0
        self.edge_dir = home

    def log(self, name: str) -> Path:
        """The log of ``name``'s latest run (``name.log``, then ``name.2.log``...)."""
        runs = self.runs.get(name, 1)
        return self.home / (f"{name}.log" if runs == 1 else f"{name}.{runs}.log")

    def logs(self, name: str) -> str:
        """Everything ``name`` printed, over all its runs."""
        runs = range(1, self.runs.get(name, 1) + 1)
        return "".join(
            (self.home / (f"{name}.log" if n == 1 else f"{name}.{n}.log")).read_text() for n in runs
        )

    def logged_at(self, name: str, text: str) -> float | None:
        """When ``name``'s latest run first logged a line holding ``text`` (epoch seconds,
        from the line's timestamp), or None."""
        for line in self.log(name).read_text().splitlines():
            if text in line:
                with contextlib.suppress(ValueError):
                    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        if name in self.procs:
            self.runs[name] = self.runs.get(name, 1) + 1
        proc = spawn(argv, env, self.log(name))
        self.procs[name] = proc
        return proc

    def url(self, replica: str) -> str:
        return f"http://127.0.0.1:{self.api_ports[replica]}"

    # -- the control plane -------------------------------------------------------------

    def bootstrap(self) -> None:
        """``shellwego bootstrap --email`` against the database: the first owner's token."""
        done = subprocess.run(
            [SHELLWEGO, "bootstrap", "--email", "ops@example.com", "--json"],
            env=self.shared,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.home,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        self.token = json.loads(done.stdout)["token"]

    def replica(self, name: str) -> None:
        """``shellwego server --no-edge`` on every address (agents come through veths)."""
        port = self.api_ports.setdefault(name, free_port())
        env = {
            **self.shared,
            "SHELLWEGO_DATA_DIR": str(self.home / name),
            "SHELLWEGO_API_HOST": "0.0.0.0",
            "SHELLWEGO_API_PORT": str(port),
        }
        proc = self._spawn(name, [SHELLWEGO, "server", "--no-edge"], env)
        wait_line(self.log(name), r"ShellWeGo API listening", proc)

    def cli(self, replica: str, *args: str) -> str:
        done = subprocess.run(
            [SHELLWEGO, *args],
            env={
                **self.base,
                "SHELLWEGO_API_URL": self.url(replica),
                "SHELLWEGO_TOKEN": self.token,
                "SHELLWEGO_CONFIG_DIR": str(self.home / "cli"),
            },
            capture_output=True,
            text=True,
            timeout=300,
            cwd=self.home,
        )
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done.stdout

    def instances(self, replica: str, app: str) -> list[dict[str, object]]:
        found: list[dict[str, object]] = json.loads(self.cli(replica, "ps", "-a", app, "--json"))
        return found

    def nodes(self, replica: str) -> dict[str, str]:
        """Node name → status."""
        return {
            str(n["hostname"]): str(n["status"])
            for n in json.loads(self.cli(replica, "nodes", "list", "--json"))
        }

    # -- nodes ---------------------------------------------------------------------------

    def link(self, name: str) -> Outside:
        """A network namespace for a node, joined to the host by a veth pair."""
        link = Outside(host_networks())
        self.links[name] = link
        return link

    def agent(self, name: str, replicas: list[str], ports: str) -> None:
        """``shellwego agent`` in ``name``'s namespace, knowing ``replicas`` at the host end
        of its veth; its instances listen on the namespace's address (``--address``)."""
        link = self.links.get(name) or self.link(name)
        servers = ",".join(f"http://{link.host_address}:{self.api_ports[r]}" for r in replicas)
        env = {
            **self.base,
            "SHELLWEGO_DATA_DIR": str(self.home / name),
            "SHELLWEGO_INSTANCE_NETWORK": "host",  # the node's own namespace
            "SHELLWEGO_INSTANCE_PORTS": ports,
        }
        argv = [
            "ip",
            "netns",
            "exec",
            link.netns,
            SHELLWEGO,
            "agent",
            "--server",
            servers,
            "--join-token-file",
            str(self.join_file),
            "--hostname",
            name,
            "--address",
            link.address,
        ]
        proc = self._spawn(name, argv, env)
        wait_line(self.log(name), r"agent running", proc)

    def edge(self, replicas: list[str]) -> None:
        self.edge_http = free_port()
        env = {
            **self.base,
            "SHELLWEGO_DATA_DIR": str(self.home / "edge"),
            "SHELLWEGO_HTTP_PORT": str(self.edge_http),
            "SHELLWEGO_HTTPS_PORT": str(free_port()),
            "SHELLWEGO_JOIN_TOKEN": self.join,
            "SHELLWEGO_SERVER_URLS": ",".join(self.url(r) for r in replicas),
        }
        proc = self._spawn("edge", [SHELLWEGO, "edge"], env)
        self.edge_dir = Path(wait_line(self.log("edge"), r"edge running.*\(state in (.*)\)", proc))

    def edge_upstreams(self, app: str) -> set[str]:
        """The addresses the edge node routes ``app`` to (its current table)."""
        table = json.loads((self.edge_dir / "last-table.json").read_text())
        return {
            u["address"] for r in table["routes"] if r["app_name"] == app for u in r["upstreams"]
        }

    def get(self, app: str) -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.edge_http}/", headers={"Host": f"{app}.localhost"}, timeout=5
        )

    # -- failures ------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        stop(self.procs[name], signal.SIGKILL)

    def cut(self, name: str) -> None:
        """The node's link goes down (its veth, at the host's end)."""
        ip("link", "set", self.links[name].host_veth, "down")

    def close(self) -> None:
        for proc in reversed(self.procs.values()):
            stop(proc)
        for link in self.links.values():
            # what the agent left running in the namespace: its instances
            pids = subprocess.run(
                ["ip", "netns", "pids", link.netns], capture_output=True, text=True, check=False
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            link.close()


# -- the failures an operator's cluster must survive ------------------------------------


@dataclass
class Figures:
    """What :func:`failovers` saw: the loads' results and how long each recovery took."""

    replica_kill: LoadResult = field(default_factory=LoadResult)
    switch_seconds: dict[str, float] = field(default_factory=dict)  # per agent / edge
    agent_kill_seconds: float = 0.0  # until both web instances were healthy on node-2
    agent_kill_edge_seconds: float = 0.0  # until the edge stopped routing to node-1
    link_cut_seconds: float = 0.0  # until the edge stopped routing to node-2
    link_cut_replaced_seconds: float = 0.0  # until both were healthy on node-1
    # until the edge stopped routing there (a request the cut node's instance does not
    # answer is tried on the other one after the dial timeout)
    during_cut: LoadResult = field(default_factory=LoadResult)
    after_cut: LoadResult = field(default_factory=LoadResult)

    def report(self) -> str:
        switches = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.switch_seconds.items())
        return "\n".join(
            [
                f"replica kill -9 under load: {self.replica_kill.summary()}",
                f"  switch to the other replica (from the kill): {switches}",
                f"agent kill -9: replacements healthy after {self.agent_kill_seconds:.1f} s, "
                f"edge stopped routing to the node after {self.agent_kill_edge_seconds:.1f} s",
                f"link cut: edge stopped routing to the node after {self.link_cut_seconds:.1f} s, "
                f"replacements healthy after {self.link_cut_replaced_seconds:.1f} s",
                f"  load until then: {self.during_cut.summary()}",
                f"  load after the edge stopped routing there: {self.after_cut.summary()}",
            ]
        )


DEADLINE = 180.0  # a generous failure timeout for each step, never a measurement


def live_web(c: Cluster, replica: str, app: str) -> list[dict[str, object]]:
    """The app's web instances that serve: running, healthy, not draining."""
    return [
        i
        for i in c.instances(replica, app)
        if i["process_type"] == "web"
        and i["state"] == "running"
        and i["healthy"]
        and not i.get("draining")
    ]


def on_nodes(c: Cluster, replica: str, app: str) -> list[str]:
    """The nodes the app's live web instances run on (one entry per instance)."""
    return sorted(str(i["node_hostname"]) for i in live_web(c, replica, app))


def routes_to(c: Cluster, app: str, node: str) -> bool:
    address = c.links[node].address
    return any(u.startswith(f"{address}:") for u in c.edge_upstreams(app))


def failovers(c: Cluster, app: str, source: Path) -> Figures:
    """Two replicas a and b, agents node-1 and node-2, an edge, ``app`` deployed from
    ``source`` at web=2 spread over both nodes; then (a) kill -9 of replica a under load
    and a config change through b, (b) kill -9 of node-1's agent, (c) node-1 back, the app
    spread again, and node-2's link cut. Fails (AssertionError) when a step does not
    happen within :data:`DEADLINE`."""
    figures = Figures()
    c.bootstrap()
    c.replica("a")
    c.replica("b")
    c.agent("node-1", ["a", "b"], "33000-33499")
    c.agent("node-2", ["a", "b"], "33500-33999")
    c.edge(["a", "b"])
    both = {"node-1": "ready", "node-2": "ready"}
    until(lambda: c.nodes("b") == both, DEADLINE, "both nodes join")

    def spread() -> bool:
        return on_nodes(c, "b", app) == ["node-1", "node-2"] and len(c.edge_upstreams(app)) == 2

    c.cli("a", "apps", "create", app)
    c.cli("a", "apps", "update", "-a", app, "--strategy", "spread")
    c.cli("a", "deploy", str(source), "-a", app)
    c.cli("a", "scale", "web=2", "worker=0", "-a", app)
    until(spread, DEADLINE, "web=2 spread over both nodes")
    until(lambda: "says hi" in c.get(app).text, DEADLINE, "the edge serves the app")

    # (a) replica a dies under load; a release made through b rolls out meanwhile
    with Load(f"http://127.0.0.1:{c.edge_http}/", f"{app}.localhost") as load:
        time.sleep(2)
        killed, killed_at = time.monotonic(), time.time()
        c.kill("a")
        for name in ("node-1", "node-2", "edge"):
            until(
                lambda n=name: c.logged_at(n, "switching to") is not None,  # type: ignore[misc]
                DEADLINE,
                f"{name} switches to replica b",
            )
            figures.switch_seconds[name] = (c.logged_at(name, "switching to") or 0) - killed_at
        # past the time after which a silent node would be declared down
        time.sleep(max(0.0, killed + NODE_DOWN_AFTER + 2 - time.monotonic()))
        assert c.nodes("b") == both, "a node was declared down while its agent switched"
        c.cli("b", "config", "set", "-a", app, "GREETING=again")
        until(
            lambda: spread() and all("again" in c.get(app).text for _ in range(10)),
            DEADLINE,
            "the release made through b serves from both nodes",
        )
    figures.replica_kill = load.result

    # (b) node-1's agent dies: its instance is replaced on node-2
    killed = time.monotonic()
    c.kill("node-1")
    figures.agent_kill_seconds = until(
        lambda: on_nodes(c, "b", app) == ["node-2", "node-2"],
        DEADLINE,
        "node-1's instance replaced on node-2",
    )
    until(lambda: not routes_to(c, app, "node-1"), DEADLINE, "the edge drops node-1")
    figures.agent_kill_edge_seconds = time.monotonic() - killed

    # (c) node-1 back (it stops what was replaced), the app spread again, node-2 cut off
    c.agent("node-1", ["b"], "33000-33499")
    until(lambda: c.nodes("b") == both, DEADLINE, "node-1 back")
    c.cli("b", "restart", "-a", app)
    until(spread, DEADLINE, "web=2 spread over both nodes again")
    with Load(f"http://127.0.0.1:{c.edge_http}/", f"{app}.localhost") as during:
        c.cut("node-2")
        cut = time.monotonic()
        figures.link_cut_seconds = until(
            lambda: not routes_to(c, app, "node-2"), DEADLINE, "the edge stops routing to node-2"
        )
    figures.during_cut = during.result
    with Load(f"http://127.0.0.1:{c.edge_http}/", f"{app}.localhost") as after:
        time.sleep(5)
    figures.after_cut = after.result
    until(
        lambda: on_nodes(c, "b", app) == ["node-1", "node-1"],
        DEADLINE,
        "node-2's instance replaced on node-1",
    )
    figures.link_cut_replaced_seconds = time.monotonic() - cut
    return figures
