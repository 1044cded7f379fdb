"""Source deploy → healthy, cold and warm dependency cache, on a real all-in-one platform.

Starts `shellwego up` on an empty data directory, then times `POST /v1/apps/{app}/builds`
(upload, build, release, health-gated rollout) until the stream's final `done` line, and
checks the app answers through the edge. "cold" is the first build of the example (empty
dependency cache: pip downloads and installs); "warm" redeploys changed code with
unchanged requirements. Each warm run changes a source file so the slug differs.

Run: .venv/bin/python bench/deploy_bench.py [--example python-web] [--runs 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from shellwego.build.archive import make_tarball

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(home: Path) -> tuple[subprocess.Popen[str], int, int]:
    api, http, https = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "SHELLWEGO_CONFIG_DIR": str(home / "cli"),
    }
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "shellwego"),
            "up",
            "--api-port",
            str(api),
            "--http-port",
            str(http),
            "--https-port",
            str(https),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Press Ctrl-C" in line:
            return proc, api, http
    raise SystemExit("shellwego up did not start")


def deploy(client: httpx.Client, app: str, src: Path) -> float:
    buf = io.BytesIO()
    make_tarball(src, buf)
    started = time.perf_counter()
    with client.stream(
        "POST",
        f"/v1/apps/{app}/builds",
        content=buf.getvalue(),
        headers={"Content-Type": "application/gzip"},
        timeout=600,
    ) as r:
        for line in r.iter_lines():
            event = json.loads(line)
            if event["type"] == "done":
                if event["status"] != "succeeded":
                    raise SystemExit(f"deploy failed: {event}")
                return time.perf_counter() - started
    raise SystemExit("the build stream ended without a done line")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="python-web")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="swg-deploy-bench-"))
    src = home / "src"
    shutil.copytree(ROOT / "examples" / args.example, src)
    proc, api, http = start(home)
    try:
        token = json.loads((home / "cli" / "config.json").read_text())["token"]
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{api}", headers={"Authorization": f"Bearer {token}"}
        )
        client.post("/v1/apps", json={"name": "bench"}).raise_for_status()
        cold = deploy(client, "bench", src)
        warm = []
        for n in range(args.runs):
            (src / "bench_marker.txt").write_text(f"run {n}\n")
            warm.append(deploy(client, "bench", src))
        r = httpx.get(f"http://127.0.0.1:{http}/", headers={"Host": "bench.localhost"})
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
    print(f"deploy → healthy, example {args.example}, all-in-one on this machine")
    print(f"  cold (empty dependency cache)   {cold:6.2f} s")
    print(
        f"  warm (unchanged requirements)   p50 {statistics.median(warm):.2f} s, "
        f"min {min(warm):.2f} s, max {max(warm):.2f} s over {len(warm)} runs"
    )


if __name__ == "__main__":
    main()
