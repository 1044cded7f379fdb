"""Python apps as Heroku users write them, built by the real builder and run by the real
process runtime: ``python app.py``, ``python -m ...``, console scripts and ``pip`` work in
an instance, which sees its app at ``/app`` (its HOME and working directory) with
``DYNO``, ``PORT`` and ``WEB_CONCURRENCY``; servers binding ``[::]`` or ``0.0.0.0`` work,
in the host's network and in a network namespace of their own; gunicorn starts without
``AF_UNIX path too long``."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from shellwego.build.archive import safe_extract
from shellwego.build.builder import Builder, BuildResult
from shellwego.runtime.driver import InstanceSpec
from shellwego.runtime.process import ProcessDriver
from shellwego.runtime.sandbox import Sandbox
from support.netns import Networks
from support.scratch_node import Node, wait_http, wait_until

# Serves its view of the world as JSON, on [::] (IPv4 too: IPV6_V6ONLY off) or 0.0.0.0.
APP = """
import http.server, json, os, socket, sys

class Server(http.server.HTTPServer):
    address_family = socket.AF_INET6 if os.environ.get("BIND") == "::" else socket.AF_INET
    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        import six  # from the app's virtualenv
        body = json.dumps({
            "prefix": sys.prefix, "executable": sys.executable, "cwd": os.getcwd(),
            "six": six.__file__, "env": dict(os.environ),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

Server((os.environ.get("BIND", "0.0.0.0"), int(os.environ["PORT"])), Handler).serve_forever()
"""
WSGI = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"gunicorn ok"]
"""
FILES = {
    "requirements.txt": "six\ngunicorn\n",
    "Procfile": "web: python app.py\n",
    "app.py": APP,
    "wsgi.py": WSGI,
    "static/hello.txt": "hello from http.server\n",
}


def need_sandbox() -> None:
    if Sandbox.detect().binary is None:
        pytest.skip("bubblewrap cannot create a sandbox here: instances do not see /app")


async def built_app(node: Node, tmp_path: Path, name: str = "py") -> Path:
    """The slug of FILES built by the real builder, extracted where the agent keeps slugs."""
    src = tmp_path / "src"
    for rel, text in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    lines: list[str] = []

    async def log(line: str) -> None:
        lines.append(line)

    result = await Builder(tmp_path / "cache").build(src, tmp_path / "out", log)
    assert isinstance(result, BuildResult), "\n".join(lines)
    app = node.apps / name
    with result.slug_path.open("rb") as stream:
        safe_extract(stream, app, max_bytes=10**9)
    return app


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


async def wait_url(url: str) -> bytes:
    async def attempt() -> bytes | None:
        try:
            return await asyncio.to_thread(get, url)
        except OSError:
            return None

    return bytes(await wait_until(attempt, timeout=30))


async def logs(driver: ProcessDriver, instance_id: str) -> str:
    return "\n".join([line.line async for line in driver.logs(instance_id)])


def spec(node: Node, app: Path, iid: str, command: str, **extra: object) -> InstanceSpec:
    return node.spec(iid, app, command, index=int(iid.rsplit("-", 1)[1]), **extra)  # type: ignore[arg-type]


@pytest.mark.timeout(300)
async def test_python_processes_heroku_users_write_run_in_an_instance(
    node: Node, tmp_path: Path
) -> None:
    need_sandbox()
    app = await built_app(node, tmp_path)
    driver = node.driver()

    # web: python app.py, on [::]
    web = spec(node, app, "web-1", "python app.py", env={"BIND": "::"}, memory_bytes=512 << 20)
    await driver.start(web)
    seen = json.loads(await wait_http(web.port))
    assert seen["prefix"] == "/app/.shellwego/python"  # the app's own virtualenv
    assert seen["six"].startswith("/app/.shellwego/python/lib/")
    assert seen["cwd"] == "/app"
    env = seen["env"]
    assert env["HOME"] == "/app"
    assert env["VIRTUAL_ENV"] == "/app/.shellwego/python"
    assert env["PORT"] == str(web.port)
    assert env["DYNO"] == "web.1"
    assert env["WEB_CONCURRENCY"] == "2"  # 512 MiB

    # python -m http.server $PORT (binds every address: [::] where the host has IPv6)
    served = spec(node, app, "web-2", "python -m http.server $PORT --directory static")
    await driver.start(served)
    assert await wait_http(served.port) != b""
    assert get(f"http://127.0.0.1:{served.port}/hello.txt") == b"hello from http.server\n"

    # a console script: gunicorn, whose control socket is $HOME/.gunicorn/gunicorn.ctl; an
    # instance id as long as a real one in a deep data directory puts the instance's host
    # path past the 108 bytes of a Unix socket path, /app does not
    long_id = f"{'0' * 60}-web-3"
    assert len(f"{node.state_dir}/{long_id}/app/.gunicorn/gunicorn.ctl") > 108
    green = spec(node, app, long_id, "gunicorn --bind 0.0.0.0:$PORT --workers 2 wsgi:app")
    await driver.start(green)
    assert await wait_http(green.port) == b"gunicorn ok"
    await asyncio.sleep(1.0)  # its control server starts after the workers
    gunicorn_log = await logs(driver, long_id)
    assert "Booting worker" in gunicorn_log
    assert "AF_UNIX path too long" not in gunicorn_log
    assert "Control server error" not in gunicorn_log
    assert "Failed to start control socket" not in gunicorn_log

    # pip, in a one-off command like the instance's
    done = await driver.exec(web, ["/bin/sh", "-c", "pip --version && python -m pip --version"])
    assert done.exit_code == 0, done.output
    assert done.output.count("from /app/.shellwego/python/lib/python") == 2


@pytest.mark.timeout(300)
async def test_servers_on_ipv6_any_and_ipv4_any_answer_in_a_network_of_their_own(
    node: Node, tmp_path: Path, networks: Networks
) -> None:
    need_sandbox()
    app = await built_app(node, tmp_path)
    driver = node.driver(network=await networks.make("node"))
    for iid, bind in (("web-1", "::"), ("web-2", "0.0.0.0")):
        status = await driver.start(spec(node, app, iid, "python app.py", env={"BIND": bind}))
        assert status.address is not None, "no network of its own"
        seen = json.loads(await wait_url(f"http://{status.address}:{status.port}/"))
        assert seen["env"]["DYNO"] == f"web.{iid[-1]}"
        assert seen["cwd"] == "/app"


@pytest.mark.timeout(300)
async def test_without_a_sandbox_instances_keep_their_host_path(node: Node, tmp_path: Path) -> None:
    app = await built_app(node, tmp_path)
    driver = node.driver(sandbox=False)
    assert any("instead of /app" in note for note in driver.capabilities().notes)
    web = spec(node, app, "web-1", "python app.py")
    await driver.start(web)
    seen = json.loads(await wait_http(web.port))
    home = str(node.state_dir / "web-1" / "app")
    assert seen["env"]["HOME"] == home == seen["cwd"]
    assert seen["prefix"] == f"{home}/.shellwego/python"  # the slug is relocatable
