"""Requests/s and latency through the edge (Caddy) versus straight to the app.

Caddy is programmed by ShellWeGo's own renderer and admin client, exactly as the platform
does it (retries, passive health checks, traffic metering). The same load generator (wrk,
keep-alive, one thread, 32 connections) runs against the app directly and through the
edge, alternating direct/edge for ``--rounds`` rounds in the same run; the figures are the
median of the rounds with their spread (min..max). Apps:

  asgi      a minimal ASGI app under uvicorn (httptools; ``--workers`` processes)
  threaded  Python's ThreadingHTTPServer (one thread per connection, Nagle off, headers
            and body in one write)

Placement is fixed and the same for both paths, so the comparison is fair: wrk runs on
the first CPU, the app and Caddy share the others (Caddy's GOMAXPROCS follows that
affinity). Without the pinning, wrk, Caddy and the app fight for the same cores and the
ratio mostly measures the scheduler. ``--no-pin`` turns it off.

``--work-us N`` makes the app burn N µs of CPU per request, like an app that does
something. The bench also reports the CPU time Caddy and the app spend per request (from
/proc), and the requests Caddy proxies per CPU-second it uses.

Run: .venv/bin/python bench/edge_bench.py [--seconds 8] [--rounds 5] [--app all|asgi|threaded]
     [--work-us 0] [--workers 1] [--no-pin]      (needs wrk: apt-get install -y wrk)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shellwego.edge.process import CaddyProcess
from shellwego.edge.routes import AppRoute, EdgeSettings, RouteTable, Upstream

BURN = """
import time


def burn(us):
    if us:
        end = time.perf_counter() + us / 1e6
        while time.perf_counter() < end:
            pass
"""

THREADED_APP = (
    BURN
    + """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORK = int(sys.argv[2])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 4096  # status line, headers and body leave in one write

    def do_GET(self):
        burn(WORK)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "13")
        self.end_headers()
        self.wfile.write(b"Hello, world!")

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # wrk opens its 32 connections at once

    def handle_error(self, request, client_address):
        pass  # wrk resets its connections when it stops


server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
server.serve_forever()
"""
)

ASGI_APP = (
    BURN
    + """
import os

WORK = int(os.environ.get("BENCH_WORK_US", "0"))


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    burn(WORK)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
"""
)


@dataclass
class Run:
    rps: float
    p50: float
    p99: float
    errors: int
    requests: float
    app_cpu: float  # CPU seconds the app used
    edge_cpu: float  # CPU seconds Caddy used (0 when the edge is not in the path)


@dataclass(frozen=True)
class Placement:
    load: set[int] | None  # CPUs of the load generator (None: not pinned)
    serve: set[int] | None  # CPUs of the app and Caddy

    def describe(self) -> str:
        if self.load is None or self.serve is None:
            return f"not pinned, {os.cpu_count()} cores shared by wrk, Caddy and the app"
        serve = ",".join(map(str, sorted(self.serve)))
        return (
            f"wrk on CPU {min(self.load)}, app and Caddy on CPU {serve} "
            f"(Caddy GOMAXPROCS {len(self.serve)})"
        )

    def pin_load(self) -> Callable[[], None] | None:
        load = self.load
        if load is None:
            return None
        return lambda: os.sched_setaffinity(0, load)


def placement(pin: bool) -> Placement:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return Placement(None, None)
    return Placement({cpus[0]}, set(cpus[1:]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) and its child processes."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(cpu_seconds(int(child)) for child in children)
    return total


def wrk(
    url: str, seconds: int, where: Placement, host: str | None = None
) -> tuple[float, float, float, int]:
    argv = ["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", url]
    if host:
        argv += ["-H", f"Host: {host}"]
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, preexec_fn=where.pin_load()
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if m is None:
            raise SystemExit(f"could not read the {label}th percentile from wrk:\n{out}")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise SystemExit(f"could not read requests/s from wrk:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    failed = int(errors.group(1)) if errors else 0
    if socket_errors:
        failed += sum(int(g) for g in socket_errors.groups())
    return float(rps.group(1)), ms("50"), ms("99"), failed


def measure(
    url: str, seconds: int, where: Placement, app_pid: int, edge_pid: int | None, host: str | None
) -> Run:
    app0 = cpu_seconds(app_pid)
    edge0 = cpu_seconds(edge_pid) if edge_pid else 0.0
    rps, p50, p99, errors = wrk(url, seconds, where, host)
    app1 = cpu_seconds(app_pid)
    edge1 = cpu_seconds(edge_pid) if edge_pid else 0.0
    return Run(rps, p50, p99, errors, rps * seconds, app1 - app0, edge1 - edge0)


def start_app(
    kind: str, work: Path, port: int, work_us: int, workers: int
) -> subprocess.Popen[bytes]:
    if kind == "asgi":
        (work / "benchapp.py").write_text(ASGI_APP)
        argv = [
            sys.executable, "-m", "uvicorn", "benchapp:app", "--port", str(port),
            "--log-level", "warning", "--no-access-log", "--http", "httptools",
            "--workers", str(workers),
        ]  # fmt: skip
    else:
        (work / "threaded.py").write_text(THREADED_APP)
        argv = [sys.executable, "threaded.py", str(port), str(work_us)]
    env = {**os.environ, "BENCH_WORK_US": str(work_us)}
    return subprocess.Popen(argv, cwd=work, env=env)


def wait_listening(port: int, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            if time.monotonic() > end:
                raise SystemExit(f"the app did not listen on port {port}") from None
            time.sleep(0.05)


def spread(values: list[float], fmt: str) -> str:
    return (
        f"{format(statistics.median(values), fmt)} "
        f"({format(min(values), fmt)}..{format(max(values), fmt)})"
    )


def report(label: str, runs: list[Run]) -> None:
    line = (
        f"  {label:18} {spread([r.rps for r in runs], ',.0f')} req/s   "
        f"p50 {spread([r.p50 for r in runs], '.2f')} ms   "
        f"p99 {spread([r.p99 for r in runs], '.2f')} ms   "
        f"errors {sum(r.errors for r in runs)}   "
        f"app cpu {statistics.median(r.app_cpu / r.requests * 1e6 for r in runs):.0f} us/req"
    )
    if any(r.edge_cpu for r in runs):
        per_req = statistics.median(r.edge_cpu / r.requests * 1e6 for r in runs)
        per_cpu_s = statistics.median(r.requests / r.edge_cpu for r in runs if r.edge_cpu)
        line += f"   caddy cpu {per_req:.0f} us/req = {per_cpu_s:,.0f} req per caddy cpu-second"
    print(line)


async def bench(
    kind: str, args: argparse.Namespace, work: Path, edge: CaddyProcess, where: Placement
) -> None:
    port = free_port()
    app = start_app(kind, work, port, args.work_us, args.workers)
    direct: list[Run] = []
    through: list[Run] = []
    try:
        wait_listening(port)
        host = f"{kind}.localhost"
        table = RouteTable([AppRoute(kind, kind, [host], [Upstream(f"127.0.0.1:{port}")])])
        await edge.apply(table)
        direct_url = f"http://127.0.0.1:{port}/"
        edge_url = f"http://127.0.0.1:{edge.settings.http_port}/"
        wrk(direct_url, 2, where)  # warm-up, both paths
        wrk(edge_url, 2, where, host)
        for n in range(args.rounds):
            # alternate the order, so a drift in the machine's load hits both paths alike
            order = ("direct", "edge") if n % 2 == 0 else ("edge", "direct")
            for path in order:
                if path == "direct":
                    direct.append(measure(direct_url, args.seconds, where, app.pid, None, None))
                else:
                    through.append(
                        measure(edge_url, args.seconds, where, app.pid, edge.pid, host)
                    )
    finally:
        app.terminate()
        app.wait()
    app_desc = {
        "asgi": f"minimal ASGI app, uvicorn+httptools, {args.workers} worker(s)",
        "threaded": "ThreadingHTTPServer",
    }[kind]
    print(
        f"{app_desc}, app work {args.work_us} us/request; wrk -t1 -c32 -d{args.seconds}s "
        f"keep-alive, {args.rounds} rounds alternating; {where.describe()}"
    )
    print("  median (min..max) of the rounds")
    report("direct to the app", direct)
    report("through the edge", through)
    ratios = [e.rps / d.rps for d, e in zip(direct, through, strict=True)]
    print(
        f"  edge throughput = {statistics.median(ratios):.0%} of direct "
        f"(per round {min(ratios):.0%}..{max(ratios):.0%})\n"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--app", choices=["all", "asgi", "threaded"], default="all")
    parser.add_argument("--work-us", type=int, default=0, help="app CPU work per request")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (asgi app)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install -y wrk")
    where = placement(not args.no_pin)
    if where.serve is not None:
        # Caddy and the apps are started from here: they inherit this affinity
        os.sched_setaffinity(0, where.serve)
    work = Path(tempfile.mkdtemp(prefix="swg-edge-bench-"))
    edge = CaddyProcess(
        EdgeSettings(
            http_port=free_port(),
            https_port=free_port(),
            admin_socket=work / "admin.sock",
            base_domain="localhost",
            acme_email=None,
            acme_ca=None,
            acme_staging=False,
            ask_url="http://127.0.0.1:1/",
            data_dir=work / "caddy",
        )
    )
    try:
        await edge.start()
        for kind in ("asgi", "threaded") if args.app == "all" else (args.app,):
            await bench(kind, args, work, edge, where)
    finally:
        await edge.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
