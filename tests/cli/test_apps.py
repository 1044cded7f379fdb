"""apps create/list/info/delete, open, and how the app is found."""

from __future__ import annotations

import json
import subprocess

from .conftest import Cli, api_get, register_node, stamp


def test_create_list_info_delete(logged_in: Cli) -> None:
    r = logged_in("apps", "create", "hello")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == (
        "Created app hello: http://hello.localhost/\n"
        f"Wrote {logged_in.workdir}/.shellwego: commands in this directory now target hello.\n"
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
        "Deploy:    surge 1, max unavailable 0\n"
        "Placement: binpack, any node\n"
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
    assert (r.exit_code, r.stdout) == (2, "")  # a usage mistake: nothing was tried
    assert r.stderr == (
        "Error: deleting other cannot be undone: run again with --yes to confirm "
        "(see: shellwego apps delete --help)\n"
    )
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
        2,
        "",
        "Error: nothing to change: pass --[no-]redirect-https, --surge, --max-unavailable, "
        "--strategy or --constraint (see: shellwego apps update --help)\n",
    )
    r = logged_in("apps", "update", "ghost", "--redirect-https")
    assert (r.exit_code, r.stderr) == (1, "Error: Not found: app 'ghost' not found\n")


def test_update_deploy_and_placement_settings(logged_in: Cli) -> None:
    assert logged_in("apps", "create", "hello").exit_code == 0
    r = logged_in("apps", "update", "--surge", "3")
    assert (r.exit_code, r.stdout, r.stderr) == (
        0,
        "Updated hello: deploy surge 3, max unavailable 0.\n",
        "",
    )
    # a setting left out keeps its value
    r = logged_in("apps", "update", "--max-unavailable", "1", "--redirect-https")
    assert (r.exit_code, r.stdout) == (
        0,
        "Updated hello: plain HTTP now redirects to HTTPS.\n"
        "Updated hello: deploy surge 3, max unavailable 1.\n",
    )
    assert api_get(logged_in.api, "/v1/apps/hello")["deploy"] == {"surge": 3, "max_unavailable": 1}

    # constraints no ready node satisfies are refused, and nothing changes
    r = logged_in("apps", "update", "--constraint", "region=eu", "--strategy", "spread")
    assert (r.exit_code, r.stdout, r.stderr) == (
        1,
        "",
        "Error: Insufficient capacity: no ready node offering runtime 'process' has the labels "
        "region=eu (placement constraints of app hello); labels on ready nodes: none\n",
    )
    register_node(logged_in.api, "eu-a", labels={"region": "eu", "disk": "ssd"})
    r = logged_in("apps", "update", "--constraint", "region=eu", "--constraint", "disk=ssd")
    assert (r.exit_code, r.stdout, r.stderr) == (
        0,
        "Updated hello: placement binpack, nodes with disk=ssd region=eu.\n",
        "",
    )
    # LABEL= removes one constraint; the others stay
    r = logged_in("apps", "update", "--strategy", "spread", "--constraint", "disk=")
    assert (r.exit_code, r.stdout) == (
        0,
        "Updated hello: placement spread, nodes with region=eu.\n",
    )
    assert api_get(logged_in.api, "/v1/apps/hello")["placement"] == {
        "strategy": "spread",
        "constraints": {"region": "eu"},
    }
    lines = logged_in("apps", "info").stdout.splitlines()
    assert lines[6:8] == [
        "Deploy:    surge 3, max unavailable 1",
        "Placement: spread, nodes with region=eu",
    ]
    r = logged_in("apps", "update", "--constraint", "region=")
    assert (r.exit_code, r.stdout) == (0, "Updated hello: placement spread, any node.\n")

    for args, message in [
        (
            ("--constraint", "region"),
            "Error: 'region' is not LABEL=VALUE (e.g. region=eu; region= removes it) "
            "(see: shellwego apps update --help)\n",
        ),
        (
            ("--constraint", "bad label=x"),
            "Error: Invalid input: placement.constraints.bad label.[key]: String should match "
            "pattern '^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$'\n",
        ),
        (
            ("--strategy", "random"),
            "Error: Invalid value for '--strategy': Value error, 'random' is not one of "
            "'binpack', 'spread' (see: shellwego apps update --help)\n",
        ),
        (
            ("--max-unavailable", "101"),
            "Error: Invalid value for '--max-unavailable': Input should be less than or equal to "
            "100 (see: shellwego apps update --help)\n",
        ),
    ]:
        r = logged_in("apps", "update", *args)
        assert (r.exit_code != 0, r.stdout, r.stderr) == (True, "", message)
    shown = api_get(logged_in.api, "/v1/apps/hello")
    assert (shown["deploy"], shown["placement"]) == (
        {"surge": 3, "max_unavailable": 1},
        {"strategy": "spread", "constraints": {}},
    )


def test_app_resolution_order(logged_in: Cli) -> None:
    for name in ("one", "two", "three", "four"):
        assert logged_in("apps", "create", name, "--json").exit_code == 0
    (logged_in.workdir / ".shellwego").unlink()

    r = logged_in("releases")
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr == (
        "Error: no app given: pass --app NAME or run inside an app directory "
        "(see: shellwego releases --help)\n"
    )

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


def test_apps_create_marks_only_a_directory_that_looks_like_an_app(logged_in: Cli) -> None:
    # ShellWeGo's own checkout, where the quickstart runs `apps create`, is not an app's
    checkout = logged_in.workdir / "shellwego"
    (checkout / "src" / "shellwego").mkdir(parents=True)
    (checkout / "src" / "shellwego" / "__init__.py").write_text("")
    (checkout / "pyproject.toml").write_text('[project]\nname = "shellwego"\n')
    (checkout / ".git").mkdir()
    notes = logged_in.workdir / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("ship it\n")
    for folder, name in ((checkout, "hello"), (notes, "other")):
        logged_in.workdir = folder
        r = logged_in("apps", "create", name)
        assert (r.exit_code, r.stdout) == (
            0,
            f"Created app {name}: http://{name}.localhost/\n"
            f"{folder} does not look like an app's directory, so no .shellwego was written "
            f"there: pass -a {name}, or deploy with: shellwego deploy PATH -a {name}\n",
        )
        assert not (folder / ".shellwego").exists()

    # an app's directory (here: a Procfile) is marked, and the message says where
    app_dir = checkout.parent / "blog"
    app_dir.mkdir()
    (app_dir / "Procfile").write_text("web: python3 app.py\n")
    logged_in.workdir = app_dir
    r = logged_in("apps", "create", "blog")
    assert r.stdout.splitlines()[1] == (
        f"Wrote {app_dir}/.shellwego: commands in this directory now target blog."
    )
    assert (app_dir / ".shellwego").read_text() == "app = blog\n"
