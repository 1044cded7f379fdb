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
import subprocess
import time
from pathlib import Path
from typing import Any

from support.load import Load

from .conftest import EXAMPLES, Platform, start_platform, stop_platform


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
    assert "Owner account: owner@example.com" in text
    assert "password:" in text
    out = platform.cli("whoami").stdout
    assert "owner@example.com" in out
    creds = platform.home / "data" / "shellwego" / "credentials.txt"
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


def test_restart_resumes_running_apps(tmp_path: Path) -> None:
    platform = start_platform(tmp_path / "home", ports="25000-29999")
    try:
        platform.cli("apps", "create", "again")
        platform.cli("deploy", str(EXAMPLES / "static-site"), "-a", "again")
        platform.wait_for("again", "static site")
    finally:
        text = stop_platform(platform)
    assert "Error" not in text
    again = start_platform(tmp_path / "home", ports="25000-29999")
    try:
        assert "Owner account" not in "".join(again.output)  # not a first start
        again.wait_for("again", "static site", deadline=60)
    finally:
        stop_platform(again)
