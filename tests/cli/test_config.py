"""config vars and secrets."""

from __future__ import annotations

import json

from .conftest import Cli


def _app(cli: Cli) -> None:
    assert cli("apps", "create", "hello").exit_code == 0


def test_config_set_get_unset_list(logged_in: Cli) -> None:
    _app(logged_in)
    r = logged_in("config")
    assert (r.exit_code, r.stdout) == (0, "hello has no config vars.\n")

    r = logged_in("config", "set", "DEBUG=1", "DATABASE_URL=postgres://u:p@h/db?x=1", "-a", "hello")
    assert (r.exit_code, r.stdout) == (0, "Set DATABASE_URL, DEBUG on hello.\n")
    r = logged_in("config")
    assert r.stdout == "DATABASE_URL=postgres://u:p@h/db?x=1\nDEBUG=1\n"
    assert json.loads(logged_in("config", "--json").stdout) == {
        "DATABASE_URL": "postgres://u:p@h/db?x=1",
        "DEBUG": "1",
    }
    assert logged_in("config", "get", "DEBUG").stdout == "1\n"

    r = logged_in("config", "unset", "DEBUG")
    assert (r.exit_code, r.stdout) == (0, "Unset DEBUG on hello.\n")
    r = logged_in("config", "get", "DEBUG")
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", "Error: DEBUG is not set on hello\n")
    assert logged_in("config").stdout == "DATABASE_URL=postgres://u:p@h/db?x=1\n"

    r = logged_in("config", "set", "NOEQUALS")
    assert (r.exit_code, r.stderr) == (1, "Error: expected KEY=VALUE: an argument has no '='\n")
    r = logged_in("config", "set", "1BAD=x")
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and "'1BAD'" in r.stderr


def test_secrets_values_are_never_shown(logged_in: Cli) -> None:
    _app(logged_in)
    value = "s3cr3t-value-do-not-print"
    r = logged_in("secrets", "set", f"STRIPE_KEY={value}")
    assert (r.exit_code, r.stdout) == (0, "Set secret STRIPE_KEY on hello (version 1).\n")
    # setting again makes a new version
    r = logged_in("secrets", "set", f"STRIPE_KEY={value}-2")
    assert (r.exit_code, r.stdout) == (0, "Set secret STRIPE_KEY on hello (version 2).\n")
    r = logged_in("secrets", "rotate", f"STRIPE_KEY={value}-3")
    assert (r.exit_code, r.stdout) == (0, "Rotated secret STRIPE_KEY on hello (version 3).\n")

    r = logged_in("secrets", "list")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "UPDATED", "LAST", "USED"]
    assert lines[2].split()[:2] == ["STRIPE_KEY", "3"]
    assert len(lines) == 3
    listed = logged_in("secrets", "list", "--json").stdout
    assert [s["name"] for s in json.loads(listed)] == ["STRIPE_KEY"]
    for text in (r.stdout, listed):
        assert value not in text
    # secrets are not config vars
    assert logged_in("config").stdout == "hello has no config vars.\n"

    r = logged_in("secrets", "reveal", "STRIPE_KEY")
    assert (r.exit_code, r.stdout) == (0, f"{value}-3\n")
    r = logged_in("secrets", "reveal", "STRIPE_KEY", "--version", "1")
    assert r.stdout == f"{value}\n"

    r = logged_in("secrets", "rm", "STRIPE_KEY")
    assert (r.exit_code, r.stdout) == (0, "Removed secret STRIPE_KEY from hello.\n")
    assert logged_in("secrets", "list").stdout == "hello has no secrets.\n"
    r = logged_in("secrets", "rm", "STRIPE_KEY")
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1
