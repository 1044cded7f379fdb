"""Instances in network namespaces of their own, attacked from inside by tenant code.

Each instance is a real process-runtime instance (its app's uid, the sandbox, its own
network namespace on a node network); the attacker is the app itself: it serves
``GET /?name=HOST:PORT``, tries each connection from inside and answers what happened
(tests/support/prober.py). Everything is root only (skipped otherwise, with the reason).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

from shellwego.agent.health import HealthMonitor, Target
from shellwego.agent.reconcile import HealthCheck
from shellwego.runtime.driver import InstanceState
from shellwego.runtime.process import ProcessDriver
from support.net import free_port
from support.netns import Networks
from support.prober import PROBER, query
from support.scratch_node import Node, wait_until

PORT = 8080  # every instance listens on the same port: each has an address of its own


def get(address: str, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://{address}:{PORT}{path}", timeout=5) as response:
        return bytes(response.read()).decode()


async def wait_get(address: str, path: str = "/") -> str:
    async def attempt() -> str | None:
        try:
            return await asyncio.to_thread(get, address, path)
        except OSError:
            return None

    return str(await wait_until(attempt))


async def start(driver: ProcessDriver, node: Node, name: str, uid: int) -> str:
    app = node.app(name, {"web.py": PROBER})
    status = await driver.start(node.spec(f"{name}-1", app, "python3 web.py", port=PORT, uid=uid))
    assert status.address is not None, "no network of its own"
    await wait_get(status.address)
    return status.address


async def test_tenants_reach_neither_each_other_nor_the_host(
    node: Node, networks: Networks
) -> None:
    network = await networks.make("node")
    driver = node.driver(network=network)
    victim = await start(driver, node, "victim", 1000701)
    attacker = await start(driver, node, "attacker", 1000702)
    assert victim != attacker
    assert json.loads(await wait_get(victim))["uid"] == 1000701

    # services of the host: bound to every address, and to loopback only
    host_any = networks.server(None, "0.0.0.0", free_port())
    host_lo = networks.server(None, "127.0.0.1", free_port())
    attempts = {
        "other instance": f"{victim}:{PORT}",
        "host via gateway": f"{network.gateway}:{host_any.port}",
        "host loopback": f"127.0.0.1:{host_lo.port}",
        "host via 127.0.0.1, any-address service": f"127.0.0.1:{host_any.port}",
    }
    seen = json.loads(await asyncio.to_thread(get, attacker, "/" + query(attempts)))["seen"]
    assert len(seen) == len(attempts), seen
    assert not any(answer.startswith("ok") for answer in seen.values()), seen
    assert host_any.peers == [] and host_lo.peers == []

    # the host (the edge, the agent's health checks) reaches both at address:PORT
    monitor = HealthMonitor(driver, lambda: None)
    try:
        for iid in ("victim-1", "attacker-1"):
            assert await monitor.check(Target(iid, PORT, HealthCheck(type="http")))
    finally:
        await monitor.close()


async def test_egress_goes_out_through_nat(node: Node, networks: Networks) -> None:
    network = await networks.make("node")
    outside = networks.outside()
    server = networks.server(outside.path, outside.address)
    driver = node.driver(network=network)
    address = await start(driver, node, "egress", 1000711)
    target = {"outside": f"{outside.address}:{server.port}"}
    seen = json.loads(await asyncio.to_thread(get, address, "/" + query(target)))["seen"]
    assert seen == {"outside": f"ok {outside.host_address}"}  # it sees the host, not the app


async def test_a_one_off_command_gets_a_network_of_its_own_for_its_run(
    node: Node, networks: Networks
) -> None:
    network = await networks.make("node")
    driver = node.driver(network=network)
    instance = await start(driver, node, "oneoff", 1000721)
    attack = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({instance!r}, {PORT}), 2); print('reached')\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    spec = node.spec("run-1", node.apps / "oneoff", "python3", uid=1000722)
    result = await driver.exec(spec, ["python3", "-c", attack], timeout=30)
    assert result.exit_code == 0, result.output
    assert result.output.strip() != "reached"
    assert [n.instance_id for n in await network.instances()] == ["oneoff-1"]  # detached


async def test_an_agent_restart_keeps_the_address_and_removal_frees_it(
    node: Node, networks: Networks
) -> None:
    network = await networks.make("node")
    first = node.driver(network=network)
    address = await start(first, node, "kept", 1000731)
    await first.close()

    again = node.driver(network=network)
    [adopted] = await again.recover()
    assert (adopted.state, adopted.address) == (InstanceState.RUNNING, address)
    await wait_get(address)
    await again.remove("kept-1")
    assert await network.instances() == []
    assert not Path(f"/run/netns/{network.names.netns('kept-1')}").exists()


async def test_without_a_node_network_instances_share_the_hosts(node: Node) -> None:
    driver = node.driver()
    assert "netns" not in driver.capabilities().isolation
    assert "instances share the host's network (host ports)" in driver.capabilities().notes
