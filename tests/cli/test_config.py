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

    # usage mistakes exit 2 and name the argument (by position: it may be a value)
    r = logged_in("config", "set", "A=1", "NOEQUALS")
    assert (r.exit_code, r.stderr) == (
        2,
        "Error: argument 2 has no '=': expected KEY=VALUE (see: shellwego config set --help)\n",
    )
    r = logged_in("config", "set", "1BAD=x")
    assert (r.exit_code, r.stderr) == (
        2,
        "Error: '1BAD' is not a valid name (letters, digits and _, not first a digit) "
        "(see: shellwego config set --help)\n",
    )
    r = logged_in("config", "unset", "NO-GOOD")
    assert (r.exit_code, r.stderr) == (
        2,
        "Error: 'NO-GOOD' is not a config var name (see: shellwego config unset --help)\n",
    )
    assert logged_in("config").stdout == "DATABASE_URL=postgres://u:p@h/db?x=1\n"


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


def _deployed(cli: Cli, procfile: str = "web: python3 -m http.server $PORT\n") -> None:
    """hello deployed as v1 with no web instance (no agent runs here): every rollout
    finishes as soon as its release phase has."""
    assert cli("apps", "create", "hello").exit_code == 0
    assert cli("scale", "web=0").exit_code == 0
    (cli.workdir / "Procfile").write_text(procfile)
    r = cli("deploy")
    assert r.exit_code == 0, r.stdout + r.stderr


def test_config_changes_and_rollbacks_name_their_release_and_follow_it(logged_in: Cli) -> None:
    _deployed(logged_in)
    r = logged_in("config", "set", "GREETING=Hello")
    assert (r.exit_code, r.stdout, r.stderr) == (
        0,
        "Setting GREETING and restarting hello... done, v2\n",
        "",
    )
    r = logged_in("config:set", "GREETING=Howdy", "EXTRA=1")
    assert (r.exit_code, r.stdout) == (
        0,
        "Setting EXTRA, GREETING and restarting hello... done, v3\n",
    )
    r = logged_in("config", "unset", "EXTRA")
    assert (r.exit_code, r.stdout) == (0, "Unsetting EXTRA and restarting hello... done, v4\n")

    # a rollback brings back v2's code and config: config shows what runs
    r = logged_in("rollback", "v2")
    assert (r.exit_code, r.stdout) == (0, "Rolling back hello to v2... done, v5\n")
    assert logged_in("config").stdout == "GREETING=Hello\n"
    # the next change keeps it: the later Howdy does not come back
    r = logged_in("config", "set", "OTHER=x", "--no-wait")
    assert (r.exit_code, r.stdout) == (
        0,
        "Setting OTHER and restarting hello... v6 is rolling out\n",
    )
    assert logged_in("config").stdout == "GREETING=Hello\nOTHER=x\n"
    r = logged_in("rollback", "v3", "--json")
    assert (r.exit_code, json.loads(r.stdout)["version"]) == (0, 7)
    assert json.loads(logged_in("config", "--json").stdout) == {"EXTRA": "1", "GREETING": "Howdy"}

    r = logged_in("restart")
    assert (r.exit_code, r.stdout) == (0, "Restarting hello... done, v7\n")
    r = logged_in("restart", "--no-wait")
    assert (r.exit_code, r.stdout) == (0, "Restarting hello... v7 is rolling out\n")


def test_a_failing_release_command_fails_the_change(logged_in: Cli) -> None:
    _deployed(
        logged_in,
        "web: python3 -m http.server $PORT\n"
        'release: echo "release $SHELLWEGO_RELEASE"; test "$BREAK" != yes\n',
    )
    r = logged_in("config", "set", "BREAK=yes")
    failed = "release command of v2 failed (exit code 1): v2 was not rolled out, v1 keeps serving"
    assert (r.exit_code, r.stdout, r.stderr) == (
        1,
        '-----> Running release command: echo "release $SHELLWEGO_RELEASE"; '
        'test "$BREAK" != yes\n'
        "       release v2\n"
        f"-----> R{failed[1:]}\n"
        "Setting BREAK and restarting hello... failed, v2\n",
        f"Error: {failed}\n",
    )
    assert logged_in("apps", "info").stdout.splitlines()[4] == "Release:   v1"
    events = json.loads(logged_in("events", "--json").stdout)
    assert [e["message"] for e in events if e["type"] == "release.failed"] == [failed]

    r = logged_in("config", "unset", "BREAK")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[1:] == [
        "       release v3",
        "-----> Release command of v3 succeeded",
        "Unsetting BREAK and restarting hello... done, v3",
    ]
    r = logged_in("logs", "--process", "release", "--tail", "10")
    assert [line.split(": ", 1)[1] for line in r.stdout.splitlines()] == [
        "release v1",
        "release v2",
        "release v3",
    ]
