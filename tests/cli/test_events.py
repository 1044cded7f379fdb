"""scale beyond capacity, placement that cannot fit, and the app's events, against nodes
that join through the agent protocol (they run nothing, so placement is all that happens)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from .conftest import MIB, Cli, api_get, register_node, stamp

# long enough that a placement problem makes an events row wider than a default console
APP = "a-rather-long-app-name-for-wide-rows"


def _events(cli: Cli, query: str = "") -> list[dict[str, Any]]:
    return list(api_get(cli.api, f"/v1/apps/{APP}/events?limit=500{query}")["items"])


def _rows(events: list[dict[str, Any]]) -> list[str]:
    """The table as the CLI prints it: TIME, TYPE, MESSAGE, newest last, never folded."""
    width = max(len("TYPE"), *(len(e["type"]) for e in events))
    message = max(len("MESSAGE"), *(len(e["message"]) for e in events))
    return [
        f"{'TIME'.ljust(20)}   {'TYPE'.ljust(width)}   MESSAGE",
        "─" * (20 + 3 + width + 3 + message),
        *(
            f"{stamp(e['created_at'])}   {e['type'].ljust(width)}   {e['message']}".rstrip()
            for e in events
        ),
    ]


def test_capacity_problems_and_events(logged_in: Cli) -> None:
    node = register_node(logged_in.api, "small-a", cpu_millis=1100, memory_bytes=1152 * MIB)
    assert logged_in("apps", "create", APP).exit_code == 0
    r = logged_in("events")
    assert (r.exit_code, r.stdout, r.stderr) == (0, f"{APP} has no events yet.\n", "")
    (logged_in.workdir / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    # nothing to place: the rollout finishes at once
    assert logged_in("scale", "web=0").exit_code == 0
    r = logged_in("deploy")
    assert r.exit_code == 0, r.stdout + r.stderr

    # a formation that cannot fit is refused in one line naming the largest free slot
    r = logged_in("scale", "web=50")
    assert (r.exit_code, r.stdout, r.stderr) == (
        1,
        "",
        "Error: Insufficient capacity: cannot run 50 web instances of size small for app "
        f"{APP} on the nodes as they are now: cannot place 50 instances of app {APP} process web "
        "(0.25 cores and 256 MiB each): only 4 fit on the 1 eligible node; the largest free "
        f"slot left is 0.1 cores and 128 MiB (on {node})\n",
    )
    assert api_get(logged_in.api, f"/v1/apps/{APP}")["formation"]["web"]["count"] == 0

    assert logged_in("scale", "web=2").exit_code == 0
    end = time.monotonic() + 30
    while len(json.loads(logged_in("ps", "--json").stdout)) < 2:
        assert time.monotonic() < end, "the formation was not placed"
        time.sleep(0.1)

    # constraints under which the formation cannot fit are refused too
    ssd = register_node(
        logged_in.api, "ssd-a", cpu_millis=250, memory_bytes=256 * MIB, labels={"disk": "ssd"}
    )
    r = logged_in("apps", "update", "--constraint", "disk=ssd")
    assert (r.exit_code, r.stdout, r.stderr) == (
        1,
        "",
        "Error: Insufficient capacity: cannot run 2 web instances of size small for app "
        f"{APP} on the nodes as they are now: cannot place 2 instances of app {APP} process web "
        "(0.25 cores and 256 MiB each): only 1 fit on the 1 eligible node; the largest free "
        f"slot left is 0 cores and 0 B (on {ssd})\n",
    )
    assert api_get(logged_in.api, f"/v1/apps/{APP}")["placement"]["constraints"] == {}

    # its node drains: the other node has room for one of the two replacements; once that
    # one is placed, the app says why the second is not
    assert logged_in("nodes", "drain", node).exit_code == 0
    settled = f"cannot place 1 instance of app {APP} process web"
    end = time.monotonic() + 30
    while True:
        problem = api_get(logged_in.api, f"/v1/apps/{APP}")["formation_error"] or ""
        if problem.startswith(settled):
            break
        assert time.monotonic() < end, f"the formation did not settle after the drain: {problem}"
        time.sleep(0.1)
    lines = logged_in("apps", "info").stdout.splitlines()
    assert lines[5:7] == ["Formation: web=2:small", f"Unplaced:  {problem}"]

    events = _events(logged_in)
    # one event per change of the problem: "2 wanted, only 1 fits" may be seen first, when
    # a pass ran before the first replacement was placed, then never the same one twice
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["deploy.started", "deploy.succeeded"], kinds
    assert kinds[2:] in (["formation.unplaceable"], ["formation.unplaceable"] * 2), kinds
    unplaceable = [e["message"] for e in events[2:]]
    assert unplaceable[-1] == problem
    assert all(a != b for a, b in itertools.pairwise(unplaceable))
    r = logged_in("events")
    assert (r.exit_code, r.stdout.splitlines(), r.stderr) == (0, _rows(events), "")
    r = logged_in("events", "--limit", "1", "--json")
    assert (r.exit_code, json.loads(r.stdout)) == (0, events[-1:])
    r = logged_in("events", "--limit", "2")
    assert (r.exit_code, r.stdout.splitlines()) == (0, _rows(events[-2:]))

    [deployment] = api_get(logged_in.api, f"/v1/apps/{APP}/deployments")["items"]
    r = logged_in("events", "--deployment", deployment["id"], "-a", APP)
    assert (r.exit_code, r.stdout.splitlines()) == (0, _rows(events[:2]))
    r = logged_in("events", "--deployment", "01JDQ0000000000000000000AA")
    assert (r.exit_code, r.stdout) == (
        0,
        f"Deployment 01JDQ0000000000000000000AA of {APP} has no events.\n",
    )
    r = logged_in("events", "--limit", "0")
    assert (r.exit_code, r.stderr) == (
        2,
        "Error: Invalid value for '--limit' / '-n': Input should be greater than or equal to 1 "
        "(see: shellwego events --help)\n",
    )
