"""A real all-in-one platform (`shellwego up`) in a subprocess, driven through the real CLI."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from support.dns_server import DnsServer
from support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SHELLWEGO = str(Path(sys.executable).parent / "shellwego")


@dataclass
class Platform:
    home: Path
    api_port: int
    http_port: int
    https_port: int
    process: subprocess.Popen[str]
    env: dict[str, str] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def cli(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [SHELLWEGO, *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"shellwego {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def get(
        self, app: str, path: str = "/", timeout: float = 5.0, retry: bool = False
    ) -> httpx.Response:
        """GET through the edge, as a browser asking for http://<app>.localhost would.

        ``retry``: like a browser, retry once when the connection is closed before any
        response (an edge reload can close a connection it just accepted).
        """
        for attempt in (1, 2):
            try:
                return httpx.get(
                    f"http://127.0.0.1:{self.http_port}{path}",
                    headers={"Host": f"{app}.localhost"},
                    timeout=timeout,
                )
            except httpx.RemoteProtocolError:
                if not retry or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @property
    def data_dir(self) -> Path:
        return self.home / "data" / "shellwego"

    @property
    def root_cert(self) -> Path:
        """The edge's internal CA root (what a browser or curl --cacert trusts)."""
        return self.data_dir / "caddy" / "storage" / "pki" / "authorities" / "local" / "root.crt"

    def get_https(self, host: str, path: str = "/", timeout: float = 5.0) -> httpx.Response:
        """GET https://<host>:<https port><path> through the edge, verified against the root.

        The name is sent as SNI and Host while the connection goes to 127.0.0.1, as a
        resolver mapping ``*.localhost`` (or the domain's DNS) to this machine would do.
        """
        trust = ssl.create_default_context(cafile=str(self.root_cert))
        with httpx.Client(verify=trust, timeout=timeout) as client:
            return client.get(
                f"https://127.0.0.1:{self.https_port}{path}",
                headers={"Host": host},
                extensions={"sni_hostname": host},
            )

    def wait_for(self, app: str, text: str, deadline: float = 60.0) -> httpx.Response:
        end = time.monotonic() + deadline
        last: object = None
        while time.monotonic() < end:
            try:
                r = self.get(app)
                if r.status_code == 200 and text in r.text:
                    return r
                last = (r.status_code, r.text[:200])
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"{app} never answered {text!r} through the edge; last: {last!r}")


def platform_env(home: Path, ports: str) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "SHELLWEGO_CONFIG_DIR": str(home / "cli"),
        "LANG": "C.UTF-8",
        "SHELLWEGO_INSTANCE_PORTS": ports,  # platforms running side by side never collide
    }


def launch(
    home: Path, env: dict[str, str], api: int, http: int, https: int
) -> subprocess.Popen[str]:
    """``shellwego up`` on these ports, its output on a pipe."""
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            SHELLWEGO,
            "up",
            "--api-port",
            str(api),
            "--http-port",
            str(http),
            "--https-port",
            str(https),
        ],
        env=env,
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def start_platform(
    home: Path,
    ports: str = "20000-24999",
    *,
    api_port: int | None = None,
    env: dict[str, str] | None = None,
) -> Platform:
    api, http, https = api_port or free_port(), free_port(), free_port()
    env = {**platform_env(home, ports), **(env or {})}
    process = launch(home, env, api, http, https)
    platform = Platform(home, api, http, https, process, env)
    end = time.monotonic() + 60
    assert process.stdout is not None
    while time.monotonic() < end:
        line = process.stdout.readline()
        if not line:
            break
        platform.output.append(line)
        if "Press Ctrl-C to stop" in line:
            return platform
    process.kill()
    raise AssertionError("shellwego up did not start:\n" + "".join(platform.output))


def stop_platform(platform: Platform) -> str:
    """Ctrl-C, as a user would; returns everything it printed."""
    process = platform.process
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            rest, _ = process.communicate()
        platform.output.append(rest or "")
    return "".join(platform.output)


@contextlib.contextmanager
def running_platform(
    home: Path, ports: str = "20000-24999", *, env: dict[str, str] | None = None
) -> Iterator[Platform]:
    """``shellwego up`` for the duration of the block, stopped with Ctrl-C after it."""
    p = start_platform(home, ports, env=env)
    try:
        yield p
    finally:
        stop_platform(p)


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    """An authoritative DNS server the platform verifies custom domains against."""
    server = DnsServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, dns: DnsServer) -> Iterator[Platform]:
    with running_platform(
        tmp_path_factory.mktemp("platform"), env={"SHELLWEGO_DNS_RESOLVER": dns.address}
    ) as p:
        yield p
