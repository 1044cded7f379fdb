"""login, whoami, logout and tokens against the real API."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

from shellwego.services.throttle import ADDRESS

from .conftest import EMAIL, PASSWORD, Cli, api_get, stamp


def test_login_saves_a_private_config_and_whoami_uses_it(cli: Cli) -> None:
    r = cli("whoami")
    assert r.exit_code == 1
    assert r.stderr == f"Error: not logged in to {cli.api.url} (run: shellwego login)\n"

    r = cli("login", "--email", EMAIL, "--password", PASSWORD)
    assert r.exit_code == 0, r.stderr
    path = cli.config_dir / "config.json"
    assert r.stdout == (f"Logged in as {EMAIL} at {cli.api.url}.\nToken saved in {path}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["api_url"] == cli.api.url and saved["token"].startswith("swg_")

    r = cli("whoami")
    assert (r.exit_code, r.stdout, r.stderr) == (0, f"{EMAIL}\n", "")
    r = cli("whoami", "--json")
    assert json.loads(r.stdout)["email"] == EMAIL

    r = cli("logout")
    assert (r.exit_code, r.stdout) == (0, "Logged out.\n")
    assert "token" not in json.loads(path.read_text())
    # the revoked token no longer works even when given explicitly
    r = cli("whoami", env={"SHELLWEGO_TOKEN": saved["token"]})
    assert r.exit_code == 1
    assert r.stderr.endswith(" (run: shellwego login)\n")
    assert r.stderr.count("\n") == 1


def test_login_prompts_for_missing_credentials(cli: Cli) -> None:
    r = cli("login", input=f"{EMAIL}\n{PASSWORD}\n")
    assert r.exit_code == 0, r.stderr
    assert PASSWORD not in r.stdout
    assert cli("whoami").stdout == f"{EMAIL}\n"


def test_login_to_a_given_api_url(cli: Cli) -> None:
    other_dir = cli.config_dir.parent / "elsewhere"
    env = {"SHELLWEGO_API_URL": None, "SHELLWEGO_CONFIG_DIR": str(other_dir)}
    r = cli("login", "--api-url", cli.api.url + "/", "-e", EMAIL, "-p", PASSWORD, env=env)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"Logged in as {EMAIL} at {cli.api.url}."
    saved = json.loads((other_dir / "config.json").read_text())
    assert saved["api_url"] == cli.api.url
    # later commands use the saved URL without being told
    assert cli("whoami", env=env).stdout == f"{EMAIL}\n"


def test_wrong_password_is_one_line(cli: Cli) -> None:
    r = cli("login", "-e", EMAIL, "-p", "not the password")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr == "Error: Authentication required: invalid email or password\n"
    assert not (cli.config_dir / "config.json").exists()


def test_too_many_failed_logins_are_one_line_with_the_wait(cli: Cli) -> None:
    for _ in range(ADDRESS.free + 5):
        r = cli("login", "-e", EMAIL, "-p", "not the password")
        assert r.exit_code == 1
        if "Too many requests" in r.stderr:
            break
    assert re.fullmatch(
        r"Error: Too many requests: too many failed attempts from this address; "
        r"try again in \d+ s\n",
        r.stderr,
    ), r.stderr


def test_tokens_create_list_revoke(logged_in: Cli) -> None:
    r = logged_in("tokens", "create", "ci")
    assert r.exit_code == 0, r.stderr
    head, secret, _ = r.stdout.split("\n")
    made = [t for t in api_get(logged_in.api, "/v1/user/tokens")["items"] if t["name"] == "ci"]
    assert len(made) == 1
    token = made[0]
    assert head == f"Created token ci ({token['id']}). It is shown only once:"
    assert secret.startswith(token["prefix"])

    # the new token works
    r = logged_in("whoami", env={"SHELLWEGO_TOKEN": secret})
    assert r.stdout == f"{EMAIL}\n"

    r = logged_in("tokens", "list", "--json")
    listed = json.loads(r.stdout)
    assert {t["name"] for t in listed} == {"bootstrap", "ci"}
    assert all("token" not in t for t in listed)

    r = logged_in("tokens", "list")
    lines = r.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "PREFIX",
        "CREATED",
        "LAST",
        "USED",
        "EXPIRES",
        "REVOKED",
    ]
    row = next(line for line in lines if token["id"] in line)
    assert row.split()[:3] == [token["id"], "ci", token["prefix"]]
    assert stamp(token["created_at"]) in row
    assert secret not in r.stdout

    r = logged_in("tokens", "revoke", token["id"])
    assert (r.exit_code, r.stdout) == (0, f"Revoked token {token['id']}.\n")
    r = logged_in("whoami", env={"SHELLWEGO_TOKEN": secret})
    assert r.exit_code == 1
    assert r.stderr.endswith("(run: shellwego login)\n")


def test_tokens_create_without_a_name_names_it_after_the_machine(logged_in: Cli) -> None:
    r = logged_in("tokens", "create")  # as the README shows it
    assert r.exit_code == 0, r.stderr
    name = f"cli@{socket.gethostname()}"
    made = [t for t in api_get(logged_in.api, "/v1/user/tokens")["items"] if t["name"] == name]
    assert len(made) == 1
    head, secret, _ = r.stdout.split("\n")
    assert head == f"Created token {name} ({made[0]['id']}). It is shown only once:"
    assert secret.startswith(made[0]["prefix"])


def _login_without_a_terminal(cli: Cli, stdin: str) -> subprocess.CompletedProcess[str]:
    """``shellwego login -e EMAIL`` as a real process whose stdin is a pipe, not a terminal."""
    env = {k: v for k, v in {**os.environ, **cli.env()}.items() if v is not None}
    return subprocess.run(
        [str(Path(sys.executable).parent / "shellwego"), "login", "--email", EMAIL],
        input=stdin,
        env=env,
        cwd=cli.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_password_without_a_terminal_is_read_from_stdin(cli: Cli) -> None:
    r = _login_without_a_terminal(cli, f"{PASSWORD}\n")
    assert (r.returncode, r.stderr) == (
        0,
        "Reading the password from standard input (no terminal to ask on).\n",
    )
    assert r.stdout.splitlines()[0] == f"Logged in as {EMAIL} at {cli.api.url}."
    assert cli("whoami").stdout == f"{EMAIL}\n"

    r = _login_without_a_terminal(cli, "")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (
        "Reading the password from standard input (no terminal to ask on).\n"
        "Error: no password given: pass --password, or the password on standard input "
        "(see: shellwego login --help)\n"
    )
