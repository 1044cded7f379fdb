"""The edge outlives the control plane: a crashed supervisor's Caddy keeps serving, and the
next supervisor adopts it without a restart or a failed request."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shellwego.edge.process import CaddyProcess
from shellwego.edge.routes import EdgeSettings, RouteTable
from support.load import Load

from .realparts import Backend, get, route, settings_for

SUPERVISOR = """
import asyncio, json, sys
from pathlib import Path
from shellwego.edge.process import CaddyProcess
from shellwego.edge.routes import AppRoute, EdgeSettings, RouteTable, Upstream

raw = json.loads(sys.argv[1])
for key in ("admin_socket", "data_dir"):
    raw[key] = Path(raw[key])
upstream = sys.argv[2]

async def main():
    caddy = CaddyProcess(EdgeSettings(**raw))
    await caddy.start()
    route = AppRoute("id-blog", "blog", ["blog.localhost"], [Upstream(upstream)])
    await caddy.apply(RouteTable([route]))
    print("ready", caddy.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def spawn_supervisor(s: EdgeSettings, upstream: str) -> tuple[subprocess.Popen[str], int]:
    """A separate supervisor process serving blog.localhost → upstream; returns its Caddy pid."""
    raw = {
        f.name: str(v) if isinstance(v := getattr(s, f.name), Path) else v
        for f in dataclasses.fields(s)
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, json.dumps(raw), upstream],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    assert line.startswith("ready"), line
    return proc, int(line.split()[1])


async def test_a_crashed_supervisors_caddy_keeps_serving_and_is_adopted(
    tmp_path: Path, backends: dict[str, Backend]
) -> None:
    s = settings_for(tmp_path / "edge")
    a, b = backends["A"], backends["B"]
    first, caddy_pid = await spawn_supervisor(s, a.upstream.address)
    url = f"http://127.0.0.1:{s.http_port}/"
    second = CaddyProcess(s)
    try:
        with Load(url, "blog.localhost", threads=2) as load:
            await asyncio.sleep(0.3)
            first.send_signal(signal.SIGKILL)  # the control plane crashes
            first.wait()
            await asyncio.sleep(0.5)  # nobody supervises the edge now; it keeps serving
            await second.start()  # the control plane is back
            assert second.adopted and second.pid == caddy_pid and second.running
            await second.apply(RouteTable([route("blog", b.upstream)]))
            await asyncio.sleep(0.3)
        assert load.result.failed == 0, load.result.summary()
        assert load.result.answers["A"] > 0 and load.result.answers["B"] > 0
        assert (await get(second, "blog.localhost")).text == "B"
        # the adopted Caddy is supervised like a child: killed, it comes back with its routes
        os.kill(caddy_pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while True:
            try:
                if second.pid != caddy_pid and (await get(second, "blog.localhost")).text == "B":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < end, "the adopted caddy was not restarted"
            await asyncio.sleep(0.05)
        assert second.restarts == 1
    finally:
        await second.stop()
        if first.poll() is None:
            first.kill()


async def test_stop_ends_an_adopted_caddy(tmp_path: Path, backends: dict[str, Backend]) -> None:
    s = settings_for(tmp_path / "edge")
    first, caddy_pid = await spawn_supervisor(s, backends["A"].upstream.address)
    first.kill()
    first.wait()
    second = CaddyProcess(s)
    await second.start()
    try:
        assert second.adopted and second.pid == caddy_pid
        assert (await get(second, "blog.localhost")).text == "A"
    finally:
        await second.stop()
    assert not second.running
    end = time.monotonic() + 5
    while _state(caddy_pid) not in ("gone", "Z"):
        assert time.monotonic() < end, "stop() left the adopted caddy running"
        await asyncio.sleep(0.05)
    with pytest.raises(httpx.ConnectError):
        await get(second, "blog.localhost")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
