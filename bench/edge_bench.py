"""Requests/s and latency through the edge (Caddy) versus straight to the app.

Caddy is programmed by ShellWeGo's own renderer and admin client, exactly as the platform
does it (access log on, retries, passive health checks). The same load generator (wrk,
keep-alive, 2 threads, 32 connections) runs against the app directly and through the edge,
one after the other, in the same run. Apps:

  asgi      a minimal ASGI app under uvicorn (httptools; ``--workers`` processes)
  threaded  Python's ThreadingHTTPServer (one thread per connection, Nagle off, headers
            and body in one write)

``--work-us N`` makes the app burn N µs of CPU per request, like an app that does
something. Besides throughput and latency, the bench reports the CPU time Caddy and the
app spend per request (from /proc), which is what decides the ratio on a small machine
where wrk, Caddy and the app share the cores.

Run: .venv/bin/python bench/edge_bench.py [--seconds 10] [--app all|asgi|threaded]
     [--work-us 0] [--workers 1]      (needs wrk: apt-get install -y wrk)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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
    app_us: float  # app CPU per request
    edge_us: float  # Caddy CPU per request (0 when the edge is not in the path)


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


def wrk(url: str, seconds: int, host: str | None = None) -> tuple[float, float, float, int]:
    argv = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url]
    if host:
        argv += ["-H", f"Host: {host}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout

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


def measure(url: str, seconds: int, app_pid: int, edge_pid: int | None, host: str | None) -> Run:
    app0 = cpu_seconds(app_pid)
    edge0 = cpu_seconds(edge_pid) if edge_pid else 0.0
    rps, p50, p99, errors = wrk(url, seconds, host)
    app1 = cpu_seconds(app_pid)
    edge1 = cpu_seconds(edge_pid) if edge_pid else 0.0
    n = rps * seconds
    return Run(rps, p50, p99, errors, (app1 - app0) / n * 1e6, (edge1 - edge0) / n * 1e6)


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


async def bench(kind: str, args: argparse.Namespace, work: Path, edge: CaddyProcess) -> None:
    port = free_port()
    app = start_app(kind, work, port, args.work_us, args.workers)
    try:
        wait_listening(port)
        host = f"{kind}.localhost"
        table = RouteTable([AppRoute(kind, kind, [host], [Upstream(f"127.0.0.1:{port}")])])
        await edge.apply(table)
        direct_url = f"http://127.0.0.1:{port}/"
        edge_url = f"http://127.0.0.1:{edge.settings.http_port}/"
        wrk(direct_url, 2)  # warm-up, both paths
        wrk(edge_url, 2, host)
        direct = measure(direct_url, args.seconds, app.pid, None, None)
        through = measure(edge_url, args.seconds, app.pid, edge.pid, host)
    finally:
        app.terminate()
        app.wait()
    app_desc = {
        "asgi": f"minimal ASGI app, uvicorn+httptools, {args.workers} worker(s)",
        "threaded": "ThreadingHTTPServer",
    }[kind]
    print(
        f"{app_desc}, app work {args.work_us} us/request; "
        f"wrk -t2 -c32 -d{args.seconds}s, keep-alive, {os.cpu_count()} cores shared"
    )
    for label, r in (("direct to the app", direct), ("through the edge", through)):
        edge_cpu = f"   caddy cpu {r.edge_us:5.0f} us/req" if r.edge_us else ""
        print(
            f"  {label:18} {r.rps:>9,.0f} req/s   p50 {r.p50:6.2f} ms   p99 {r.p99:6.2f} ms   "
            f"errors {r.errors}   app cpu {r.app_us:5.0f} us/req{edge_cpu}"
        )
    print(f"  edge throughput = {through.rps / direct.rps:.0%} of direct\n")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--app", choices=["all", "asgi", "threaded"], default="all")
    parser.add_argument("--work-us", type=int, default=0, help="app CPU work per request")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (asgi app)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install -y wrk")
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
            await bench(kind, args, work, edge)
    finally:
        await edge.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
