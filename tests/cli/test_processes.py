"""ps, restart/stop/start, logs -f and nodes info/drain, with a real agent running the app."""

from __future__ import annotations

import json
import queue
import re
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from .conftest import Cli, LocalNode, api_get

PS_COLUMNS = ["ID", "TYPE", "STATE", "HEALTHY", "RESTARTS", "NODE", "ADDRESS", "RELEASE"]


def deploy_hello(cli: Cli) -> None:
    assert cli("apps", "create", "hello").exit_code == 0
    (cli.workdir / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    (cli.workdir / "index.html").write_text("hello from the node\n")
    r = cli("deploy")
    assert r.exit_code == 0, r.stdout + r.stderr


def instances(cli: Cli) -> list[dict[str, Any]]:
    r = cli("ps", "--json")
    assert r.exit_code == 0, r.stderr
    return list(json.loads(r.stdout))


def wait_serving(cli: Cli, other_than: str | None = None, deadline: float = 60) -> dict[str, Any]:
    """The one healthy running web instance, once it is the only instance left."""
    end = time.monotonic() + deadline
    seen: list[dict[str, Any]] = []
    while time.monotonic() < end:
        seen = instances(cli)
        if (
            len(seen) == 1
            and seen[0]["id"] != other_than
            and seen[0]["state"] == "running"
            and seen[0]["healthy"]
        ):
            return seen[0]
        time.sleep(0.2)
    raise AssertionError(f"no single healthy instance; last seen {seen}")


def answers(instance: dict[str, Any]) -> bool:
    try:
        r = httpx.get(f"http://{instance['address']}/index.html", timeout=2)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and r.text == "hello from the node\n"


def wait_silent(instance: dict[str, Any], deadline: float = 30) -> None:
    end = time.monotonic() + deadline
    while answers(instance):
        assert time.monotonic() < end, f"instance {instance['id']} still answers"
        time.sleep(0.2)


def test_ps_restart_stop_start(node: LocalNode, logged_in: Cli) -> None:
    deploy_hello(logged_in)
    first = wait_serving(logged_in)
    assert answers(first)

    r = logged_in("ps")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == PS_COLUMNS
    assert set(lines[1]) == {"─"}
    assert [row.split() for row in lines[2:]] == [
        [first["id"], "web", "running", "yes", "0", "node-a", f"127.0.0.1:{first['port']}", "v1"]
    ]

    r = logged_in("restart")  # followed until the new instance serves
    assert (r.exit_code, r.stdout, r.stderr) == (0, "Restarting hello... done, v1\n", "")
    second = wait_serving(logged_in, other_than=first["id"])
    assert answers(second)
    if first["port"] != second["port"]:
        wait_silent(first)

    r = logged_in("stop")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "Stopping hello (stopping).\n", "")
    end = time.monotonic() + 30
    while logged_in("ps").stdout != "hello has no instances.\n":
        assert time.monotonic() < end, f"stop left instances: {instances(logged_in)}"
        time.sleep(0.2)
    wait_silent(second)
    assert api_get(logged_in.api, "/v1/apps/hello")["status"] == "stopped"

    r = logged_in("start")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "Starting hello (starting).\n", "")
    third = wait_serving(logged_in)
    assert answers(third)


def test_actions_before_a_deploy_are_refused(logged_in: Cli) -> None:
    assert logged_in("apps", "create", "hello").exit_code == 0
    for action in ("restart", "start"):
        r = logged_in(action)
        assert (r.exit_code, r.stdout, r.stderr) == (
            1,
            "",
            "Error: Conflict: app hello has nothing deployed yet\n",
        )


def test_logs_follow_streams_new_lines_until_ctrl_c(node: LocalNode, logged_in: Cli) -> None:
    deploy_hello(logged_in)
    instance = wait_serving(logged_in)
    follower = logged_in.spawn("logs", "-t", "--tail", "0", "-a", "hello")
    assert follower.stdout is not None
    arrived: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [arrived.put(text) for text in follower.stdout],  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    pattern = re.compile(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ app\[web\.(?P<id>[0-9A-Z]{26})\]: "
        r'.*"GET /index\.html\?n=(?P<n>\d+) HTTP/1\.1" 200'
    )
    try:
        got: list[str] = []
        end = time.monotonic() + 30
        n = 0
        while not got:
            assert time.monotonic() < end, "no request reached the followed log"
            n += 1
            httpx.get(f"http://127.0.0.1:{instance['port']}/index.html?n={n}", timeout=2)
            try:
                got.append(arrived.get(timeout=0.5))
            except queue.Empty:
                continue
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=10)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    reader.join(timeout=5)
    while not arrived.empty():
        got.append(arrived.get())
    assert code == 0
    assert follower.stderr is not None and follower.stderr.read() == ""
    matches = [pattern.match(text) for text in got]
    assert all(matches), got
    assert {m["id"] for m in matches if m} == {instance["id"]}
    assert int(matches[0]["n"]) >= 1  # type: ignore[index]


def test_nodes_info_and_drain(node: LocalNode, logged_in: Cli) -> None:
    [listed] = json.loads(logged_in("nodes", "list", "--json").stdout)
    shown = api_get(logged_in.api, f"/v1/nodes/{listed['id']}")
    r = logged_in("nodes", "info", listed["id"])
    assert r.exit_code == 0, r.stderr
    *lines, heartbeat = r.stdout.splitlines()
    # a line per runtime this host cannot offer, with the reason (which depends on the host)
    missing = [(f"Not {runtime}", why) for runtime, why in sorted(shown["runtime_reasons"].items())]
    rows = [
        ("ID", listed["id"]),
        ("Status", "ready"),
        ("Region", f"{shown['region']}/{shown['zone']}"),
        ("Address", "127.0.0.1"),
        ("Runtimes", "process"),
        *missing,
        ("Capacity", "4 CPU, 8.0 GiB"),
        ("Labels", "-"),
        ("Agent", shown["agent_version"] or "-"),
    ]
    width = max(len(label) for label, _ in [*rows, ("Heartbeat", "")]) + 2
    assert lines == ["=== node-a", *(f"{label + ':':<{width}}{value}" for label, value in rows)]
    assert "microvm" in shown["runtime_reasons"]  # the process runtime is all it offers
    # the agent beats every 0.5 s: the shown heartbeat is the latest, to the second
    label, _, stamp = heartbeat.partition(":")
    assert label == "Heartbeat"
    beat = datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC)
    before = datetime.fromisoformat(shown["last_heartbeat_at"]).replace(microsecond=0)
    assert 0 <= (beat - before).total_seconds() < 5
    r = logged_in("nodes", "info", "node-x")
    assert (r.exit_code, r.stderr) == (1, "Error: Not found: node 'node-x' not found\n")

    r = logged_in("nodes", "drain", listed["id"])
    assert (r.exit_code, r.stdout, r.stderr) == (
        0,
        f"Draining node-a ({listed['id']}): its instances move to other nodes.\n",
        "",
    )
    assert api_get(logged_in.api, f"/v1/nodes/{listed['id']}")["status"] == "draining"
    assert logged_in("nodes", "info", listed["id"]).stdout.splitlines()[2] == (
        f"{'Status:':<{width}}draining"
    )
