"""A build step's own code against the network: it reaches the outside (package indexes),
never the host's services nor any instance. The attack runs in the app's build backend,
as pip builds it, and writes what it reached into the slug."""

from __future__ import annotations

import json
from pathlib import Path

from shellwego.build.builder import Builder
from shellwego.runtime.network import NodeNetwork
from support.hostile_build import app_uid, hostile_python_app, need_root_builder, run_build
from support.net import free_port
from support.netns import Networks


def attack(targets: dict[str, tuple[str, int]]) -> str:
    return f"""
import json, socket
seen = {{}}
for name, (host, port) in {targets!r}.items():
    try:
        with socket.create_connection((host, port), 2) as s:
            s.settimeout(2)
            seen[name] = "ok " + s.recv(64).decode(errors="replace").strip()
    except OSError as exc:
        seen[name] = type(exc).__name__
open("reached.json", "w").write(json.dumps(seen))
"""


async def test_a_build_step_reaches_the_outside_only(
    networks: Networks, work: Path, tmp_path: Path
) -> None:
    need_root_builder()
    outside = networks.outside()
    internet = networks.server(outside.path, outside.address)
    api = networks.server(None, "0.0.0.0", free_port())  # a host service: the API, a database
    instances = await networks.make("instances")  # another node network with an instance
    instance_net = await instances.attach("victim")
    instance = networks.server(instance_net.netns_path, "0.0.0.0")

    network = NodeNetwork(tmp_path / "builds" / "network", instances.settings)
    networks.made.append(network)
    await network.ready()
    builder = Builder(tmp_path / "cache", network=network)
    targets = {
        "outside": (outside.address, internet.port),
        "api via gateway": (str(network.gateway), api.port),
        "api via loopback": ("127.0.0.1", api.port),
        "instance": (str(instance_net.address), instance.port),
    }
    src = hostile_python_app(work / "src", attack(targets))

    log, result = await run_build(builder, src, work / "out", app_uid())
    assert not isinstance(result, Exception), log.text
    reached = json.loads((src / "reached.json").read_text())
    assert reached["outside"] == f"ok {outside.host_address}", reached  # through NAT
    for blocked in ("api via gateway", "api via loopback", "instance"):
        assert not reached[blocked].startswith("ok"), (blocked, reached)
    assert api.peers == [] and instance.peers == []
    assert await network.instances() == []  # the step's network went with it
