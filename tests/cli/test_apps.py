"""apps create/list/info/delete, open, and how the app is found."""

from __future__ import annotations

import json
import subprocess

from .conftest import Cli, api_get, stamp


def test_create_list_info_delete(logged_in: Cli) -> None:
    r = logged_in("apps", "create", "hello")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == (
        "Created app hello: http://hello.localhost/\n"
        "Wrote .shellwego: commands in this directory now target hello.\n"
    )
    assert (logged_in.workdir / ".shellwego").read_text() == "app = hello\n"
    made = api_get(logged_in.api, "/v1/apps/hello")
    assert isinstance(made, dict)

    # a second app does not overwrite the directory's file
    r = logged_in("apps", "create", "other")
    assert r.stdout == "Created app other: http://other.localhost/\n"
    assert (logged_in.workdir / ".shellwego").read_text() == "app = hello\n"

    r = logged_in("apps", "list")
    other = api_get(logged_in.api, "/v1/apps/other")
    assert isinstance(other, dict)
    created = {"hello": stamp(made["created_at"]), "other": stamp(other["created_at"])}
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "RUNTIME", "FORMATION", "CREATED"]
    assert set(lines[1]) == {"─"}
    rows = sorted(line.split(None, 4) for line in lines[2:])
    assert rows == [
        [name, "created", "process", "web=1:small", created[name]] for name in ("hello", "other")
    ]
    listed = json.loads(logged_in("apps", "list", "--json").stdout)
    assert sorted(a["name"] for a in listed) == ["hello", "other"]

    # info without a name uses the .shellwego file
    r = logged_in("apps", "info")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == (
        "=== hello\n"
        f"ID:        {made['id']}\n"
        "Status:    created\n"
        "Runtime:   process\n"
        "Release:   none\n"
        "Formation: web=1:small\n"
        "URL:       http://hello.localhost/\n"
        "Redirect:  no\n"
        f"Created:   {created['hello']}\n"
    )
    assert (
        json.loads(logged_in("apps", "info", "-a", "other", "--json").stdout)["id"] == (other["id"])
    )

    r = logged_in("open", "--print")
    assert (r.exit_code, r.stdout) == (0, "http://hello.localhost/\n")

    r = logged_in("apps", "delete", "other")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr == ("Error: deleting other cannot be undone: run again with --yes to confirm\n")
    assert len(json.loads(logged_in("apps", "list", "--json").stdout)) == 2

    r = logged_in("apps", "delete", "other", "--yes")
    assert (r.exit_code, r.stdout) == (0, "Deleted app other.\n")
    r = logged_in("apps", "info", "other")
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", "Error: Not found: app 'other' not found\n")


def test_update_redirect_https(logged_in: Cli) -> None:
    assert logged_in("apps", "create", "hello").exit_code == 0
    r = logged_in("apps", "update", "--redirect-https")
    assert (r.exit_code, r.stdout, r.stderr) == (
        0,
        "Updated hello: plain HTTP now redirects to HTTPS.\n",
        "",
    )
    assert api_get(logged_in.api, "/v1/apps/hello")["redirect_https"] is True
    assert "Redirect:  HTTP to HTTPS\n" in logged_in("apps", "info").stdout

    r = logged_in("apps", "update", "hello", "--no-redirect-https")
    assert (r.exit_code, r.stdout) == (
        0,
        "Updated hello: plain HTTP is served without a redirect.\n",
    )
    assert api_get(logged_in.api, "/v1/apps/hello")["redirect_https"] is False

    r = logged_in("apps", "update")
    assert (r.exit_code, r.stdout, r.stderr) == (
        1,
        "",
        "Error: nothing to change: pass --redirect-https or --no-redirect-https\n",
    )
    r = logged_in("apps", "update", "ghost", "--redirect-https")
    assert (r.exit_code, r.stderr) == (1, "Error: Not found: app 'ghost' not found\n")


def test_app_resolution_order(logged_in: Cli) -> None:
    for name in ("one", "two", "three", "four"):
        assert logged_in("apps", "create", name, "--json").exit_code == 0
    (logged_in.workdir / ".shellwego").unlink()

    r = logged_in("releases")
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == "Error: no app given: pass --app NAME or run inside an app directory\n"

    # a git remote named shellwego
    subprocess.run(["git", "init", "-q", str(logged_in.workdir)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(logged_in.workdir),
            "remote",
            "add",
            "shellwego",
            f"{logged_in.api.url}/git/four.git",
        ],
        check=True,
    )
    nested = logged_in.workdir / "src" / "deep"
    nested.mkdir(parents=True)
    assert (
        logged_in("releases").stdout == "four has no releases yet. Deploy with: shellwego deploy\n"
    )

    # a .shellwego file in a parent directory beats the git remote
    (logged_in.workdir / ".shellwego").write_text("# the app\nthree\n")
    logged_in.workdir = nested
    assert logged_in("releases").stdout.startswith("three has no releases")
    # $SHELLWEGO_APP beats the file, --app beats everything, before or after the command
    r = logged_in("releases", env={"SHELLWEGO_APP": "two"})
    assert r.stdout.startswith("two has no releases")
    r = logged_in("releases", "-a", "one", env={"SHELLWEGO_APP": "two"})
    assert r.stdout.startswith("one has no releases")
    r = logged_in("--app", "one", "releases")
    assert r.stdout.startswith("one has no releases")
    r = logged_in("releases", "-a", "one", "--json")
    assert (r.exit_code, json.loads(r.stdout)) == (0, [])
