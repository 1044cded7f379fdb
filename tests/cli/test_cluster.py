"""A cluster's first steps from the command line: `shellwego bootstrap` against the
database, agents joining with a token from a file or the environment (never argv) under
names of their own, and a `--no-edge` replica that checks its master key and says where
apps answer. Real processes, real databases (both backends where the database matters)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shellwego.errors import ConfigError
from shellwego.models import Node, Organization, User
from shellwego.services import auth, nodes
from shellwego.services.context import Context
from shellwego.settings import Settings
from shellwego.store import repository as repo
from support.net import free_port

from .conftest import Api

SHELLWEGO = str(Path(sys.executable).with_name("shellwego"))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELLWEGO_")}
    env.update(
        DATABASE_URL=settings.database_url,
        SHELLWEGO_DATA_DIR=str(settings.data_dir),
        SHELLWEGO_INSTANCE_NETWORK="host",
    )
    env.update(extra)
    return env


def _run(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``shellwego …`` as an operator on another machine: the database, no data directory."""
    env.setdefault("SHELLWEGO_DATA_DIR", str(settings.data_dir.parent / "operator"))
    return subprocess.run(
        [SHELLWEGO, *args], env=_env(settings, **env), capture_output=True, text=True, timeout=120
    )


def _counts(ctx: Context) -> tuple[int, int]:
    with ctx.db.session() as s:
        return repo.count(s, User), repo.count(s, Organization)


def test_bootstrap_makes_the_first_owner_once(ctx: Context, settings: Settings) -> None:
    made = _run(settings, "bootstrap", "--email", "ops@cluster.example", "--json")
    assert made.returncode == 0, made.stderr
    body = json.loads(made.stdout)
    assert body["user"]["email"] == "ops@cluster.example"
    assert body["organization"]["slug"] == "default"
    who = auth.authenticate(ctx, body["token"])  # the printed token works
    assert who.user_id == body["user"]["id"] and who.is_operator
    assert auth.login(ctx, "ops@cluster.example", body["password"], None).secret
    assert _counts(ctx) == (1, 1)
    assert not (settings.data_dir.parent / "operator").exists()  # no key file, nothing

    for args in (("--email", "ops@cluster.example"), ("--email", "other@x.example", "--json")):
        again = _run(settings, "bootstrap", *args)
        assert again.returncode == 1
        assert again.stdout == ""
        assert again.stderr == "Error: this platform is already bootstrapped; log in instead\n"
    assert _counts(ctx) == (1, 1)


def test_bootstrap_prints_the_token_as_text(ctx: Context, settings: Settings) -> None:
    made = _run(settings, "bootstrap", "--email", "ops@cluster.example", "--org", "ops")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert lines[0] == "owner ops@cluster.example of organization ops made"
    token = lines[1].removeprefix("API token (shown once): ")
    assert auth.authenticate(ctx, token).organization_id
    bad = _run(settings, "bootstrap", "--email", "not-an-email")
    assert bad.returncode == 2 and bad.stderr.startswith("Error: email: ")
    assert _counts(ctx) == (1, 1)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_join_token_is_never_taken_from_argv(settings: Settings, tmp_path: Path) -> None:
    for role in ("agent", "edge"):
        out = _run(settings, role, "--server", "http://127.0.0.1:9", "--join-token", "swg_join_x")
        assert out.returncode == 2
        assert out.stderr.startswith("Error: --join-token is not accepted")
        assert "--join-token-file" in out.stderr and "SHELLWEGO_JOIN_TOKEN" in out.stderr
        missing = _run(settings, role, "--server", "http://127.0.0.1:9")
        assert missing.returncode == 2
        assert "--join-token-file FILE or set SHELLWEGO_JOIN_TOKEN" in missing.stderr
        absent = tmp_path / "absent"
        unread = _run(
            settings, role, "--server", "http://127.0.0.1:9", "--join-token-file", str(absent)
        )
        assert unread.returncode == 2
        assert unread.stderr.startswith(f"Error: cannot read the join token file {absent}")


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _until(check: object, what: str, proc: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not check():  # type: ignore[operator]
        assert proc.poll() is None, f"{proc.args} exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{what}:\n{log.read_text()}"
        time.sleep(0.1)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_two_agents_on_one_host_join_under_their_own_names(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    join = nodes.create_join_token(api.ctx, "agents")
    token_file = tmp_path / "join-token"
    token_file.write_text(join + "\n")
    token_file.chmod(0o600)
    ways = {
        "node-file": (["--join-token-file", str(token_file)], {}),
        "node-env": ([], {"SHELLWEGO_JOIN_TOKEN": join}),
    }
    agents: list[subprocess.Popen[str]] = []
    logs: dict[str, Path] = {}
    try:
        for name, (extra, env) in ways.items():
            log = logs[name] = tmp_path / f"{name}.log"
            argv = [
                SHELLWEGO, "agent", "--server", api.url, "--hostname", name,
                "--state-dir", str(tmp_path / name), *extra,
            ]
            agent = _spawn(argv, _env(settings, **env), log)
            agents.append(agent)
            _until(lambda: "agent running" in logs[name].read_text(), "never ran", agent, log)  # noqa: B023
            # what every user of the host sees of it: no token
            cmdline = Path(f"/proc/{agent.pid}/cmdline").read_bytes().decode()
            assert join not in cmdline and name in cmdline

        def joined() -> set[str]:
            with api.ctx.db.session() as s:
                return {n.hostname for n in repo.find_all(s, Node)}

        _until(lambda: joined() == set(ways), "the agents did not join", agents[-1], log)
    finally:
        for agent in agents:
            _stop(agent)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_replica_without_an_edge_checks_its_key_and_names_the_apps_url(
    ctx: Context, settings: Settings, tmp_path: Path
) -> None:
    procs: list[subprocess.Popen[str]] = []

    def replica(name: str, **env: str) -> tuple[subprocess.Popen[str], Path, int]:
        port = free_port()
        log = tmp_path / f"{name}.log"
        replica_env = _env(
            settings,
            SHELLWEGO_DATA_DIR=str(tmp_path / name),
            SHELLWEGO_API_PORT=str(port),
            **env,
        )
        proc = _spawn([SHELLWEGO, "server", "--no-edge"], replica_env, log)
        procs.append(proc)
        return proc, log, port

    try:
        apps = "https://{app}.apps.example.com/"
        first, log, port = replica("one", SHELLWEGO_APPS_URL=apps)
        _until(lambda: "join agents with" in log.read_text(), "never started", first, log)
        text = log.read_text()
        assert f"apps answer at {apps}\n" in text
        token_file = tmp_path / "one" / "join-token"
        join = token_file.read_text().strip()
        assert f"--join-token-file {token_file}" in text and join not in text
        url = f"http://127.0.0.1:{port}"
        body = {
            "user": {"email": "ops@c.example", "password": "a long enough password"},
            "organization": {"name": "C", "slug": "c"},
        }
        assert httpx.post(f"{url}/v1/bootstrap", json=body).status_code == 401
        boot = httpx.post(
            f"{url}/v1/bootstrap", json=body, headers={"Authorization": f"Bearer {join}"}
        )
        assert boot.status_code == 201, boot.text
        owner = {"Authorization": f"Bearer {boot.json()['token']['token']}"}
        status = httpx.get(f"{url}/v1/status", headers=owner).json()
        assert status["apps_url_template"] == apps

        # another replica with a master key of its own (its own key file) is refused
        second, log2, _ = replica("two")
        assert second.wait(60) == 1
        # each made a key file of its own: two different master keys
        assert (tmp_path / "one" / "master.key").read_bytes() != (
            tmp_path / "two" / "master.key"
        ).read_bytes()
        err = log2.read_text().strip().splitlines()
        assert len(err) == 1 and err[0].startswith("Error: this server's master key (fingerprint ")
        assert "does not match the one recorded in the database (fingerprint " in err[0]
    finally:
        for proc in procs:
            _stop(proc)
    with pytest.raises(ConfigError):
        Settings.from_env({"SHELLWEGO_APPS_URL": "apps.example.com"})
    default = Settings.from_env({"SHELLWEGO_HTTP_PORT": "8081", "SHELLWEGO_BASE_DOMAIN": "a.test"})
    assert default.app_url("web") == "http://web.a.test:8081/"
