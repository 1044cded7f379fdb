"""From an empty data directory: `shellwego up`, deploy the examples, operate them.

Everything is real: the all-in-one platform in a subprocess (SQLite, in-process bus), the
process runtime, the build system (pip, npm), Caddy as the edge, and the CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from support.dns_server import DnsServer
from support.load import Load

from .conftest import (
    EXAMPLES,
    Platform,
    free_port,
    launch,
    platform_env,
    start_platform,
    stop_platform,
)


def instances(platform: Platform, app: str) -> list[dict[str, Any]]:
    out = platform.cli("ps", "-a", app, "--json").stdout
    return list(json.loads(out))


def wait_instances(
    platform: Platform, app: str, process_type: str, count: int, deadline: float = 60
) -> list[dict[str, Any]]:
    end = time.monotonic() + deadline
    seen: list[dict[str, Any]] = []
    while time.monotonic() < end:
        seen = [
            i
            for i in instances(platform, app)
            if i["process_type"] == process_type
            and i["healthy"]
            and i["state"] == "running"
            and i["desired_state"] == "running"
        ]
        if len(seen) == count:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"{app}: wanted {count} healthy {process_type}, have {seen}")


def copy_example(name: str, dest: Path) -> Path:
    target = dest / name
    if not target.exists():
        shutil.copytree(EXAMPLES / name, target)
    return target


def test_first_start_logs_the_cli_in(platform: Platform) -> None:
    text = "".join(platform.output)
    creds = platform.home / "data" / "shellwego" / "credentials.txt"
    assert f"Owner account: owner@example.com  (its password is in {creds})\n" in platform.output
    assert (
        f"and at https://<app>.localhost:{platform.https_port}/ "
        f"(trust the edge's local CA: {platform.root_cert})\n"
    ) in platform.output
    # the password is only in the credentials file: printed, it would be in service logs
    password = creds.read_text().split("password: ", 1)[1].strip()
    assert password not in text and "password:" not in text
    out = platform.cli("whoami").stdout
    assert "owner@example.com" in out
    assert creds.stat().st_mode & 0o777 == 0o600


def test_python_app_lifecycle(platform: Platform) -> None:
    platform.cli("apps", "create", "hello")
    deploy = platform.cli("deploy", str(EXAMPLES / "python-web"), "-a", "hello")
    assert "Python" in deploy.stdout
    assert f"http://hello.localhost:{platform.http_port}/" in deploy.stdout
    platform.wait_for("hello", "Hello from ShellWeGo!")

    platform.cli("scale", "web=3", "-a", "hello")
    wait_instances(platform, "hello", "web", 3)
    ports = set()
    for _ in range(30):
        body = platform.get("hello", retry=True).text
        ports.add(re.search(r"port (\d+)", body).group(1))  # type: ignore[union-attr]
    assert len(ports) == 3, f"the edge should balance across 3 instances, saw {ports}"

    platform.cli("config", "set", "GREETING=Howdy", "-a", "hello")
    platform.wait_for("hello", "Howdy from ShellWeGo!")
    releases = json.loads(platform.cli("releases", "-a", "hello", "--json").stdout)
    assert [r["version"] for r in releases] == [2, 1]

    platform.cli("rollback", "v1", "-a", "hello")
    platform.wait_for("hello", "Hello from ShellWeGo!")
    releases = json.loads(platform.cli("releases", "-a", "hello", "--json").stdout)
    assert releases[0]["version"] == 3

    logs = platform.cli("logs", "-a", "hello", "--tail", "500").stdout
    assert "GET / HTTP/1.1" in logs  # gunicorn's access log, shipped by the agent

    platform.cli("apps", "delete", "hello", "--yes")
    end = time.monotonic() + 30
    while platform.get("hello").status_code != 404:
        assert time.monotonic() < end, "a deleted app must stop being served"
        time.sleep(0.2)


def test_node_and_static_examples(platform: Platform) -> None:
    for app, example, text in (
        ("nodeapp", "node-web", "Hello from Node on ShellWeGo!"),
        ("site", "static-site", "Hello from a static site on ShellWeGo!"),
    ):
        platform.cli("apps", "create", app)
        platform.cli("deploy", str(EXAMPLES / example), "-a", app)
        platform.wait_for(app, text)


def test_web_and_worker_crash_and_logs(platform: Platform) -> None:
    platform.cli("apps", "create", "duo")
    platform.cli("deploy", str(EXAMPLES / "web-worker"), "-a", "duo")
    platform.wait_for("duo", "web process of duo says hi")
    platform.cli("scale", "worker=1", "-a", "duo")
    wait_instances(platform, "duo", "worker", 1)

    # the web process crashes: the runtime restarts it and the edge serves again
    [web] = wait_instances(platform, "duo", "web", 1)
    os.kill(web["pid"], signal.SIGKILL)
    end = time.monotonic() + 30
    while True:
        [now] = [i for i in instances(platform, "duo") if i["process_type"] == "web"]
        if now["restarts"] >= 1 and now["healthy"]:
            break
        assert time.monotonic() < end, "the crashed web process was not restarted"
        time.sleep(0.3)
    assert platform.get("duo").status_code == 200

    end = time.monotonic() + 30
    while "worker tick" not in platform.cli("logs", "-a", "duo", "--process", "worker").stdout:
        assert time.monotonic() < end, "the worker's output never reached the logs"
        time.sleep(0.5)

    run = platform.cli(
        "run", "-a", "duo", "--", "python3", "-c", "import os; print(os.environ['SHELLWEGO_APP'])"
    )
    assert run.stdout.strip().endswith("duo")


def test_git_push_deploys(platform: Platform, tmp_path: Path) -> None:
    platform.cli("apps", "create", "pushed")
    src = copy_example("web-worker", tmp_path)
    token = json.loads((platform.home / "cli" / "config.json").read_text())["token"]
    git = ["git", "-c", "user.email=dev@example.com", "-c", "user.name=Dev"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=src, check=True)
    subprocess.run([*git, "add", "."], cwd=src, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=src, check=True)
    push = subprocess.run(
        [*git, "push", f"http://user:{token}@127.0.0.1:{platform.api_port}/git/pushed.git", "main"],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert push.returncode == 0, push.stderr
    assert "remote:" in push.stderr
    assert token not in push.stderr + push.stdout
    platform.wait_for("pushed", "web process of pushed says hi")


def test_zero_failed_requests_across_deploy_and_rollback(platform: Platform) -> None:
    platform.cli("apps", "create", "steady")
    platform.cli("scale", "web=2", "-a", "steady", check=False)  # before the first deploy
    platform.cli("deploy", str(EXAMPLES / "web-worker"), "-a", "steady")
    platform.wait_for("steady", "says hi")
    wait_instances(platform, "steady", "web", 2)

    url = f"http://127.0.0.1:{platform.http_port}/"
    with Load(url, "steady.localhost") as load:
        platform.cli("config", "set", "GREETING=v2", "-a", "steady")
        platform.wait_for("steady", "says v2")
        platform.cli("rollback", "v1", "-a", "steady")
        platform.wait_for("steady", "says hi")
        time.sleep(3)  # past the drain period of the replaced instances
    result = load.result
    assert result.total > 100, result.summary()
    assert result.failed == 0, result.summary()
    versions = {a.split(" (pid")[0] for a in result.answers}
    assert versions == {"web process of steady says hi", "web process of steady says v2"}


def wait_answer(
    get: Callable[[], httpx.Response], check: Callable[[httpx.Response], bool], what: str
) -> httpx.Response:
    end = time.monotonic() + 30
    last: object = None
    while time.monotonic() < end:
        try:
            r = get()
            if check(r):
                return r
            last = (r.status_code, r.headers.get("location"), r.text[:200])
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{what}; last: {last!r}")


def get_host(platform: Platform, host: str, path: str = "/") -> httpx.Response:
    """Plain HTTP through the edge for any hostname (a custom domain)."""
    return httpx.get(
        f"http://127.0.0.1:{platform.http_port}{path}", headers={"Host": host}, timeout=5
    )


TOP_ROW = re.compile(
    r"^(?P<app>\S+)\s+(?P<instances>\d+)\s+(?P<cpu>[\d.]+)\s+(?P<memory>[\d.]+ (?:B|KiB|MiB|GiB))"
    r"\s+(?P<requests>\d+)\s+(?P<errors>\d+)\s+(?P<p50>-|[\d.]+ ms)\s+(?P<p99>-|[\d.]+ ms)$"
)


def top_row(platform: Platform, app: str) -> dict[str, str]:
    lines = platform.cli("top", "--once").stdout.splitlines()
    assert lines[0].split() == [
        "APP",
        "INSTANCES",
        "CPU",
        "MEMORY",
        "REQUESTS",
        "5XX",
        "P50",
        "P99",
    ]
    rows = [m.groupdict() for m in map(TOP_ROW.match, lines[2:]) if m]
    assert len(rows) == len(lines) - 2, lines
    [row] = [r for r in rows if r["app"] == app]
    return row


def test_https_redirect_custom_domain_and_top(platform: Platform, dns: DnsServer) -> None:
    platform.cli("apps", "create", "secure")
    platform.cli("deploy", str(EXAMPLES / "static-site"), "-a", "secure")
    platform.wait_for("secure", "static site")

    # HTTPS through the edge, verified against the edge's internal root certificate
    r = wait_answer(
        lambda: platform.get_https("secure.localhost"),
        lambda r: r.status_code == 200 and "static site" in r.text,
        "https://secure.localhost never answered",
    )
    assert platform.root_cert.is_file()

    # the redirect to HTTPS, switched on and off from the CLI; the edge applies it
    r = platform.cli("apps", "update", "secure", "--redirect-https")
    assert r.stdout == "Updated secure: plain HTTP now redirects to HTTPS.\n"
    r = wait_answer(
        lambda: platform.get("secure", "/index.html?x=1"),
        lambda r: r.status_code == 308,
        "plain HTTP was never redirected",
    )
    assert r.headers["location"] == (
        f"https://secure.localhost:{platform.https_port}/index.html?x=1"
    )
    assert platform.get_https("secure.localhost").status_code == 200
    platform.cli("apps", "update", "secure", "--no-redirect-https")
    wait_answer(
        lambda: platform.get("secure"),
        lambda r: r.status_code == 200 and "static site" in r.text,
        "plain HTTP was still redirected",
    )

    # a custom domain: served once its DNS TXT record is verified
    made = json.loads(
        platform.cli("domains", "add", "shop.example.test", "-a", "secure", "--json").stdout
    )
    txt = next(r for r in made["dns"] if r["record_type"] == "TXT")
    pending = platform.cli("domains", "verify", "shop.example.test", check=False)
    assert pending.returncode == 1  # not verified yet
    assert pending.stdout.startswith("shop.example.test: pending (TLS: pending)\n")
    assert get_host(platform, "shop.example.test").status_code == 404
    dns.publish("TXT", txt["name"], txt["value"])
    verified = platform.cli("domains", "verify", "shop.example.test").stdout
    assert verified == "shop.example.test: active (TLS: internal)\n"
    wait_answer(
        lambda: get_host(platform, "shop.example.test"),
        lambda r: r.status_code == 200 and "static site" in r.text,
        "the verified domain was never served",
    )
    wait_answer(
        lambda: platform.get_https("shop.example.test"),
        lambda r: r.status_code == 200 and "static site" in r.text,
        "https://shop.example.test never answered",
    )

    # top counts the requests the edge served
    before = int(top_row(platform, "secure")["requests"])
    for _ in range(20):
        assert platform.get("secure").status_code == 200
    end = time.monotonic() + 30
    while int((row := top_row(platform, "secure"))["requests"]) < before + 20:
        assert time.monotonic() < end, f"top never counted the requests: {row}"
        time.sleep(0.5)
    assert (row["instances"], row["errors"]) == ("1", "0")
    assert row["memory"] != "0 B"
    assert row["p50"].endswith(" ms")


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
            sock.listen()
        except OSError:
            return False
    return True


def test_ctrl_c_stops_everything_and_up_resumes(tmp_path: Path) -> None:
    platform = start_platform(tmp_path / "home", ports="25000-29999")
    try:
        platform.cli("apps", "create", "again")
        platform.cli("deploy", str(EXAMPLES / "static-site"), "-a", "again")
        platform.wait_for("again", "static site")
        pid_file = platform.data_dir / "caddy" / "caddy.pid"
        caddy = int(pid_file.read_text())
        apps = [i["pid"] for i in instances(platform, "again")]
        assert apps and all(alive(pid) for pid in [caddy, *apps])
    finally:
        text = stop_platform(platform)
    assert platform.process.returncode == 0, text
    assert "Error" not in text
    assert not pid_file.exists()
    # nothing is left running: the next start must not find (and take over) a stale edge
    assert not alive(caddy)
    assert not any(alive(pid) for pid in apps)
    for port in (platform.api_port, platform.http_port, platform.https_port):
        assert port_free(port), f"port {port} is still in use"

    # `shellwego up` again brings every app back
    again = start_platform(tmp_path / "home", ports="25000-29999", api_port=platform.api_port)
    try:
        assert "Owner account" not in "".join(again.output)  # not a first start
        assert "not logged in" not in "".join(again.output)
        again.wait_for("again", "static site", deadline=60)
    finally:
        stop_platform(again)
    assert again.process.returncode == 0


def test_a_failed_first_start_keeps_the_login(tmp_path: Path) -> None:
    home = tmp_path / "home"
    api = free_port()
    with socket.socket() as busy:  # something else holds the edge's HTTP port
        busy.bind(("", 0))
        busy.listen()
        http = busy.getsockname()[1]
        failed = launch(home, platform_env(home, "25000-29999"), api, http, free_port())
        output, _ = failed.communicate(timeout=60)
    assert failed.returncode == 1, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and str(http) in last, output

    # the owner account and its token were made: the next start is a resume, with the
    # CLI still logged in
    platform = start_platform(home, ports="25000-29999", api_port=api)
    try:
        text = "".join(platform.output)
        assert "Owner account" not in text and "not logged in" not in text, text
        r = platform.cli("apps", "list")
        assert r.stdout == "No apps yet. Create one with: shellwego apps create NAME\n"
        assert "owner@example.com" in platform.cli("whoami").stdout
        platform.cli("logout")
    finally:
        stop_platform(platform)

    # logged out (or moved to another API port), a resume says how to log in
    platform = start_platform(home, ports="25000-29999", api_port=api)
    try:
        credentials = platform.data_dir / "credentials.txt"
        assert (
            f"The CLI is not logged in to {platform.api_url}: run shellwego login --api-url "
            f"{platform.api_url} (the owner account's email and password are in "
            f"{credentials})\n"
        ) in platform.output
        email, password = (line.split(": ", 1)[1] for line in credentials.read_text().splitlines())
        platform.cli("login", "--email", email, "--password", password)
        assert platform.cli("whoami").stdout == f"{email}\n"
    finally:
        stop_platform(platform)


HEROKU_PY = """
import http.server, json, os, socket, sys

class Server(http.server.HTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
        super().server_bind()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        import six
        keys = ("HOME", "DYNO", "PORT", "WEB_CONCURRENCY", "VIRTUAL_ENV")
        seen = {k: os.environ.get(k) for k in keys}
        seen.update(prefix=sys.prefix, cwd=os.getcwd(), six=six.__version__)
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

Server(("::", int(os.environ["PORT"])), Handler).serve_forever()
"""


def test_a_python_app_py_app_deploys_as_on_heroku(platform: Platform, tmp_path: Path) -> None:
    """``web: python app.py`` with a requirements.txt and a .python-version, deployed with
    the CLI: the app runs in its virtualenv at /app, with Heroku's variables."""
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"  # found on the build host too
    app = tmp_path / "pyapp"
    app.mkdir()
    (app / "Procfile").write_text("web: python app.py\n")
    (app / "requirements.txt").write_text("six==1.16.0\n")
    (app / ".python-version").write_text(f"{minor}\n")
    (app / "app.py").write_text(HEROKU_PY)
    platform.cli("apps", "create", "pyapp")
    deploy = platform.cli("deploy", str(app), "-a", "pyapp")
    assert f"as Python {minor} (.python-version) asks" in deploy.stdout
    seen = json.loads(platform.wait_for("pyapp", '"six": "1.16.0"').text)
    assert seen["HOME"] == seen["cwd"]
    if shutil.which("bwrap"):
        assert seen["HOME"] == "/app"
        assert seen["prefix"] == "/app/.shellwego/python"
    assert seen["prefix"] == seen["VIRTUAL_ENV"]
    assert seen["DYNO"] == "web.1"
    assert seen["WEB_CONCURRENCY"] == "1"  # the default size, small: 256 MiB

    platform.cli("scale", "web=2:medium", "-a", "pyapp")
    wait_instances(platform, "pyapp", "web", 2)
    seen_now = [json.loads(platform.get("pyapp", retry=True).text) for _ in range(20)]
    assert {s["DYNO"] for s in seen_now} == {"web.1", "web.2"}
    assert {s["WEB_CONCURRENCY"] for s in seen_now} == {"2"}  # medium: 512 MiB

    run = platform.cli("run", "-a", "pyapp", "--", "pip", "--version")
    assert "/.shellwego/python/lib/python" in run.stdout
    platform.cli("apps", "delete", "pyapp", "--yes")
