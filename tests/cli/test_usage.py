"""Usage errors are one line and a non-zero exit; the peer platforms' spellings work."""

from __future__ import annotations

import json

import pytest

from .conftest import Cli, api_get


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("scale",), "Missing argument 'TYPE=COUNT[:SIZE]...' (see: shellwego scale --help)"),
        (("nosuch",), "No such command 'nosuch' (see: shellwego --help)"),
        (
            ("logs", "--folow"),
            "No such option: --folow (Possible options: --follow) (see: shellwego logs --help)",
        ),
        (
            ("logs", "--tail", "x"),
            "Invalid value for '--tail' / '-n': Input should be a valid integer, unable to "
            "parse string as an integer (see: shellwego logs --help)",
        ),
        (("apps", "create"), "Missing argument 'NAME' (see: shellwego apps create --help)"),
        (("apps", "create", "x", "--runtime"), "Option '--runtime' requires an argument"),
        (("config:set",), "Missing argument 'KEY=VALUE...' (see: shellwego config:set --help)"),
    ],
)
def test_usage_errors_are_one_line(logged_in: Cli, args: tuple[str, ...], message: str) -> None:
    r = logged_in(*args)
    assert (r.exit_code, r.stdout, r.stderr) == (2, "", f"Error: {message}\n")


def test_a_group_without_a_command_shows_its_help(cli: Cli) -> None:
    r = cli("apps")
    assert (r.exit_code, r.stderr) == (2, "")
    assert "Usage: shellwego apps [OPTIONS] COMMAND [ARGS]..." in r.stdout
    assert "Create, list, inspect and delete apps." in r.stdout
    r = cli("--help")
    assert (r.exit_code, r.stderr) == (0, "")
    # the peer platforms' spellings work but do not crowd the help
    assert "config:set" not in r.stdout and "ps:scale" not in r.stdout


def test_an_aborted_prompt_is_one_line(cli: Cli) -> None:
    r = cli("login", input="")
    assert r.exit_code == 1
    assert r.stderr == "Error: aborted\n"


def test_topic_command_spellings(logged_in: Cli) -> None:
    r = logged_in("apps:create", "hello")
    assert (r.exit_code, r.stdout.splitlines()[0]) == (0, "Created app hello: http://hello.localhost/")
    r = logged_in("config:set", "GREETING=Howdy", "-a", "hello")
    assert (r.exit_code, r.stdout) == (0, "Set GREETING on hello.\n")
    assert logged_in("config:get", "GREETING").stdout == "Howdy\n"
    r = logged_in("config:unset", "GREETING")
    assert (r.exit_code, r.stdout) == (0, "Unset GREETING on hello.\n")
    assert json.loads(logged_in("config", "--json").stdout) == {}
    r = logged_in("ps:scale", "web=0", "worker=2")
    assert (r.exit_code, r.stdout) == (0, "Scaled hello: web=0:small, worker=2:small\n")
    assert api_get(logged_in.api, "/v1/apps/hello")["formation"]["worker"]["count"] == 2
    r = logged_in("releases:rollback", "v1")
    assert (r.exit_code, r.stderr) == (1, "Error: Not found: release v1 of hello not found\n")
    r = logged_in("apps:destroy", "hello", "--yes")
    assert (r.exit_code, r.stdout) == (0, "Deleted app hello.\n")
