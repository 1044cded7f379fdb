"""Requests/s and latency through the edge (Caddy) versus straight to the app.

The app is a minimal ASGI app under uvicorn (one worker, httptools); Caddy is programmed
by ShellWeGo's own renderer and admin client, exactly as the platform does it (access log
on, retries and passive health checks on). The same load generator (wrk, keep-alive,
2 threads, 32 connections) runs against both, one after the other, in the same run.

Run: .venv/bin/python bench/edge_bench.py [--seconds 10]   (needs wrk: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shellwego.edge.process import CaddyProcess
from shellwego.edge.routes import AppRoute, EdgeSettings, RouteTable, Upstream

THREADED_APP = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "13")
        self.end_headers()
        self.wfile.write(b"Hello, world!")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wrk(url: str, seconds: int, host: str | None = None) -> dict[str, float]:
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

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": ms("50"),
        "p99": ms("99"),
        "errors": float(errors.group(1)) if errors else 0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--app",
        choices=["asgi", "threaded"],
        default="asgi",
        help="asgi: minimal ASGI app under uvicorn; threaded: http.server like the examples",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="swg-edge-bench-"))
    (work / "benchapp.py").write_text(APP)
    app_port = free_port()
    if args.app == "asgi":
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "benchapp:app",
            "--port",
            str(app_port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--http",
            "httptools",
        ]
    else:
        (work / "threaded.py").write_text(THREADED_APP)
        argv = [sys.executable, "threaded.py", str(app_port)]
    app = subprocess.Popen(argv, cwd=work)
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
        await edge.apply(
            RouteTable(
                [
                    AppRoute(
                        "bench", "bench", ["bench.localhost"], [Upstream(f"127.0.0.1:{app_port}")]
                    )
                ]
            )
        )
        time.sleep(1.0)
        wrk(f"http://127.0.0.1:{app_port}/", 2)  # warm-up
        direct = wrk(f"http://127.0.0.1:{app_port}/", args.seconds)
        through = wrk(
            f"http://127.0.0.1:{edge.settings.http_port}/", args.seconds, "bench.localhost"
        )
    finally:
        await edge.stop()
        app.terminate()
        app.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"edge vs direct ({args.app} app), wrk -t2 -c32 -d{args.seconds}s, keep-alive, "
        "same machine (2 cores)"
    )
    for label, r in (("direct to the app", direct), ("through the edge", through)):
        print(
            f"  {label:18} {r['rps']:>9,.0f} req/s   p50 {r['p50']:6.2f} ms   "
            f"p99 {r['p99']:6.2f} ms   non-2xx {r['errors']:.0f}"
        )
    print(f"  edge throughput = {through['rps'] / direct['rps']:.0%} of direct")


if __name__ == "__main__":
    asyncio.run(main())
