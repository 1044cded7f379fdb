"""Instance start latency of the process runtime: ``start()`` to the first HTTP 200.

Starts a minimal Python ``http.server`` app N times through the real
:class:`~shellwego.runtime.process.ProcessDriver` (with whatever cgroup and bubblewrap
isolation this host gives), polls its address with a TCP connect + ``GET /`` every 5 ms,
and prints p50/p95/max of the time from calling ``driver.start()`` to the first 200. Each
instance is removed before the next run.

As root it measures two drivers side by side, interleaved run by run so drift on a shared
machine hits both alike: instances sharing the host's network (host ports), and instances
in network namespaces of their own on a node network (what a root agent runs), and prints
what the namespace adds.

Run: .venv/bin/python bench/instance_start.py [--runs 20] [--no-sandbox] [--no-cgroups]
     [--host-only]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import time
from pathlib import Path

from shellwego.runtime.driver import InstanceSpec
from shellwego.runtime.network import NodeNetwork, network_unavailable
from shellwego.runtime.process import ProcessDriver

APP = """
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""
POLL_SECONDS = 0.005
DEADLINE_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def first_200(host: str, port: int) -> None:
    """Return once ``GET /`` on ``host:port`` answers 200."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    request = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(POLL_SECONDS)
            continue
        try:
            writer.write(request)
            await writer.drain()
            status = await reader.readline()
            if status.split()[1:2] == [b"200"]:
                return
        except (OSError, IndexError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"no HTTP 200 on {host}:{port} within {DEADLINE_SECONDS} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run(
    runs: int, sandbox: bool | None, cgroups: bool | None, host_only: bool
) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="shellwego-bench-") as scratch:
        root = Path(scratch)
        app_dir = root / "apps" / "web"
        app_dir.mkdir(parents=True, mode=0o700)
        (app_dir / "web.py").write_text(APP)
        drivers = {"host network": ProcessDriver(root / "host", sandbox=sandbox, cgroups=cgroups)}
        why = network_unavailable()
        if why is not None:
            print(f"note: {why}: namespaces are not measured")
        elif not host_only:
            network = NodeNetwork(root / "node" / "network")
            drivers["own namespace"] = ProcessDriver(
                root / "node" / "instances", sandbox=sandbox, cgroups=cgroups, network=network
            )
        for name, driver in drivers.items():
            caps = driver.capabilities()
            print(f"{name}: isolation {', '.join(caps.isolation)}")
        timings: dict[str, list[float]] = {name: [] for name in drivers}
        try:
            for i in range(runs):
                for name, driver in drivers.items():
                    spec = InstanceSpec(
                        instance_id=f"bench-{i}",
                        app_id="bench",
                        app_name="bench",
                        process_type="web",
                        release_id="r1",
                        command="python3 web.py",
                        app_dir=app_dir,
                        env={},
                        port=free_port(),
                        uid=1999999,
                    )
                    began = time.perf_counter()
                    status = await driver.start(spec)
                    await first_200(status.address or "127.0.0.1", spec.port)
                    timings[name].append((time.perf_counter() - began) * 1000)
                    await driver.remove(spec.instance_id)
        finally:
            for driver in drivers.values():
                for status in await driver.list():
                    await driver.remove(status.instance_id)
                await driver.close()
                await driver.teardown_network()
        return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-sandbox", action="store_true")
    parser.add_argument("--no-cgroups", action="store_true")
    parser.add_argument("--host-only", action="store_true", help="no namespace driver")
    args = parser.parse_args()
    results = asyncio.run(
        run(
            args.runs,
            sandbox=False if args.no_sandbox else None,
            cgroups=False if args.no_cgroups else None,
            host_only=args.host_only,
        )
    )
    print(f"start() -> first HTTP 200, n={args.runs} each, interleaved")
    for name, timings in results.items():
        print(
            f"  {name:14} p50 {statistics.median(timings):6.1f} ms  "
            f"p95 {percentile(timings, 0.95):6.1f} ms  "
            f"max {max(timings):6.1f} ms  min {min(timings):6.1f} ms"
        )
    if len(results) == 2:
        host, own = (statistics.median(t) for t in results.values())
        print(f"  the namespace adds {own - host:+.1f} ms p50")


if __name__ == "__main__":
    main()
