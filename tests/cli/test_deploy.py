"""deploy a directory through the real build system, then releases, logs and rollback."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime

import httpx

from shellwego.build.archive import make_tarball
from shellwego.cli.logs import render

from .conftest import Cli, LocalNode, api_get, register_node
from .test_processes import answers, wait_serving


def _source(cli: Cli) -> None:
    src = cli.workdir
    (src / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    (src / "index.txt").write_text("hello\n")


def test_deploy_streams_the_build_and_releases(logged_in: Cli) -> None:
    assert logged_in("apps", "create", "hello").exit_code == 0
    _source(logged_in)
    # no agent runs here: with no web instances the rollout finishes at once
    assert logged_in("scale", "web=0").exit_code == 0

    r = logged_in("deploy")
    assert r.exit_code == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("-----> Uploading work (") and lines[0].endswith(") to hello")
    assert "-----> Procfile app detected" in lines
    assert "-----> Released v1" in lines
    assert lines[-1] == "-----> Deployed v1 to http://hello.localhost/"
    assert lines.index("-----> Procfile app detected") < lines.index("-----> Released v1")

    releases = json.loads(logged_in("releases", "-a", "hello", "--json").stdout)
    assert [(r["version"], r["process_types"]) for r in releases] == [
        (1, {"web": "python3 -m http.server $PORT"})
    ]
    assert logged_in("apps", "info").stdout.splitlines()[4] == "Release:   v1"

    # a second deploy and a rollback, each with its own rollout settings; the list is
    # newest first
    r = logged_in("deploy", ".", "--surge", "3", "--max-unavailable", "1")
    assert (r.exit_code, r.stdout.splitlines()[-1]) == (
        0,
        "-----> Deployed v2 to http://hello.localhost/",
    ), r.stderr
    r = logged_in("rollback", "v1", "--surge", "2")
    assert (r.exit_code, r.stdout) == (0, "Rolling back hello to v1... done, v3\n")
    deployments = api_get(logged_in.api, "/v1/apps/hello/deployments")["items"]
    deployments.sort(key=lambda d: (d["created_at"], d["id"]))
    # the first deploy follows the app's settings, the rollback its max unavailable
    assert [(d["surge"], d["max_unavailable"]) for d in deployments] == [(1, 0), (3, 1), (2, 0)]
    versions = [r["version"] for r in json.loads(logged_in("releases", "--json").stdout)]
    assert versions == [3, 2, 1]
    r = logged_in("releases")
    assert [line.split()[0] for line in r.stdout.splitlines()[2:]] == ["v3", "v2", "v1"]
    r = logged_in("rollback", "vx")
    assert (r.exit_code, r.stderr) == (
        2,
        "Error: 'vx' is not a release version (e.g. v3 or 3) (see: shellwego rollback --help)\n",
    )
    r = logged_in("rollback", "v1", "--surge", "0")
    assert (r.exit_code, r.stderr) == (
        2,
        "Error: Invalid value for '--surge': Input should be greater than or equal to 1 "
        "(see: shellwego rollback --help)\n",
    )

    # a one-off command runs in the release's environment and passes on its exit code
    r = logged_in("run", "--", "sh", "-c", "echo one-off; exit 3")
    assert (r.exit_code, r.stdout) == (3, "one-off\n"), r.stderr

    # the build log is kept: logs shows it with its source
    r = logged_in("logs", "--process", "build", "--tail", "500")
    assert r.exit_code == 0, r.stderr
    build_lines = [line for line in r.stdout.splitlines() if "Procfile app detected" in line]
    assert len(build_lines) == 2, r.stdout  # one per deploy
    for shown in build_lines:
        stamp, rest = shown.split(" ", 1)
        assert rest == "app[build]: -----> Procfile app detected"
        moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - moment).total_seconds()) < 120
    r = logged_in("logs", "--process", "build", "--tail", "1")
    assert len(r.stdout.splitlines()) == 1


def test_log_line_format() -> None:
    event = {
        "id": "01JDQ0000000000000000000AA",
        "timestamp": "2026-11-25T03:00:00.512345+00:00",
        "source": "web",
        "instance_id": "01JDQ7Y3V0K6B1ZP3M4N5Q6R7S",
        "stream": "stdout",
        "line": "GET / HTTP/1.1 200",
    }
    assert render(event) == (
        "2026-11-25T03:00:00Z app[web.01JDQ7Y3V0K6B1ZP3M4N5Q6R7S]: GET / HTTP/1.1 200"
    )
    build = {**event, "source": "build", "instance_id": None, "line": "-----> Released v2"}
    assert render(build) == "2026-11-25T03:00:00Z app[build]: -----> Released v2"
    # an offset other than UTC is shown in UTC
    assert render({**build, "timestamp": "2026-11-25T05:00:09+02:00"}).startswith(
        "2026-11-25T03:00:09Z "
    )


def test_failed_build_exits_1(logged_in: Cli) -> None:
    assert logged_in("apps", "create", "hello").exit_code == 0
    (logged_in.workdir / "Procfile").write_text("this is not a procfile\n")
    r = logged_in("deploy")
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: deploy failed: ")
    assert r.stderr.count("\n") == 1
    assert json.loads(logged_in("releases", "--json").stdout) == []


def test_image_deploy_is_refused_until_a_node_offers_an_image_runtime(logged_in: Cli) -> None:
    assert logged_in("apps", "create", "hello", "--runtime", "oci").exit_code == 0
    r = logged_in("deploy", "--image", "nginx:1.27")
    assert (r.exit_code, r.stdout, r.stderr) == (
        1,
        "-----> Deploying image nginx:1.27 to hello\n",
        "Error: Runtime unavailable: no node offers an image-capable runtime (oci or microvm)\n",
    )
    assert json.loads(logged_in("releases", "--json").stdout) == []

    # a node that offers the oci runtime joins
    register_node(logged_in.api, "oci-a", runtimes=("process", "oci"))
    r = logged_in("deploy", "--image", "bad image")
    assert (r.exit_code, r.stderr) == (
        1,
        "Error: Invalid input: 'bad image' is not an image reference (e.g. nginx:1.27)\n",
    )
    assert logged_in("apps", "create", "plain").exit_code == 0
    r = logged_in("deploy", "--image", "nginx:1.27", "-a", "plain")
    assert (r.exit_code, r.stderr) == (
        1,
        "Error: Conflict: app plain uses the process runtime, which runs built source; "
        "image deploys need an app on the oci or microvm runtime\n",
    )

    r = logged_in("deploy", "--image", "nginx:1.27", "--surge", "0")
    assert (r.exit_code, r.stdout, r.stderr) == (
        2,
        "",
        "Error: Invalid value for '--surge': Input should be greater than or equal to 1 "
        "(see: shellwego deploy --help)\n",
    )

    # no web instances wanted: the rollout of the image release finishes at once; this
    # one with its own rollout settings
    assert logged_in("scale", "web=0").exit_code == 0
    r = logged_in("deploy", "--image", "nginx:1.27", "--max-unavailable", "1")
    # the stream may see the rollout before the controller finishes it, or only after
    shown = [
        x for x in r.stdout.splitlines() if x != "-----> Deployment rolling: 0/0 instances ready"
    ]
    assert (r.exit_code, shown, r.stderr) == (
        0,
        [
            "-----> Deploying image nginx:1.27 to hello",
            "-----> Released v1",
            "-----> Deployment succeeded: 0/0 instances ready",
            "-----> Deployed v1 to http://hello.localhost/",
        ],
        "",
    )
    [release] = json.loads(logged_in("releases", "--json").stdout)
    assert (release["version"], release["image"], release["slug_digest"]) == (
        1,
        "nginx:1.27",
        None,
    )
    assert release["description"] == "Deploy image nginx:1.27"
    [deployment] = api_get(logged_in.api, "/v1/apps/hello/deployments")["items"]
    assert (deployment["surge"], deployment["max_unavailable"]) == (1, 1)


def test_a_deploy_whose_client_goes_away_mid_build_still_finishes(
    node: LocalNode, logged_in: Cli
) -> None:
    assert logged_in("apps", "create", "hello").exit_code == 0
    (logged_in.workdir / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    (logged_in.workdir / "index.html").write_text("hello from the node\n")
    with tempfile.TemporaryFile() as handle:
        make_tarball(logged_in.workdir, handle)
        handle.seek(0)
        source = handle.read()
    with httpx.stream(
        "POST",
        f"{logged_in.api.url}/v1/apps/hello/builds",
        content=source,
        headers={
            "Authorization": f"Bearer {logged_in.api.token}",
            "Content-Type": "application/gzip",
        },
        timeout=30,
    ) as response:
        assert response.status_code == 200
        first = json.loads(next(response.iter_lines()))
    # the client hung up after the build's first line
    assert first == {"type": "log", "line": "-----> Building hello"}

    # the build and the rollout finish without it
    serving = wait_serving(logged_in)
    assert serving["release_version"] == 1
    assert answers(serving)
    releases = json.loads(logged_in("releases", "--json").stdout)
    assert [r["version"] for r in releases] == [1]
    [deployment] = api_get(logged_in.api, "/v1/apps/hello/deployments")["items"]
    assert deployment["status"] == "succeeded"
    r = logged_in("logs", "--process", "build", "--tail", "500")
    assert "app[build]: -----> Compressing slug" in r.stdout, r.stdout


def test_deploy_to_a_missing_app_says_how_to_create_it_before_uploading(logged_in: Cli) -> None:
    _source(logged_in)
    r = logged_in("deploy", "-a", "ghost")
    assert (r.exit_code, r.stdout, r.stderr) == (
        1,
        "",
        "Error: app ghost does not exist. Create it with: shellwego apps create ghost\n",
    )
    r = logged_in("deploy", "no-such-dir", "-a", "ghost")
    assert (r.exit_code, r.stderr) == (
        2,
        "Error: no-such-dir is not a directory (see: shellwego deploy --help)\n",
    )


def test_a_release_command_runs_in_the_deploy_stream(logged_in: Cli) -> None:
    assert logged_in("apps", "create", "hello").exit_code == 0
    assert logged_in("scale", "web=0").exit_code == 0
    _source(logged_in)
    with (logged_in.workdir / "Procfile").open("a") as procfile:
        procfile.write("release: cat index.txt\n")
    r = logged_in("deploy")
    assert r.exit_code == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    start = lines.index("-----> Running release command: cat index.txt")
    assert lines[start + 1 : start + 3] == [
        "       hello",
        "-----> Release command of v1 succeeded",
    ]
    assert lines[start - 1] == "-----> Released v1"
    assert lines[-1] == "-----> Deployed v1 to http://hello.localhost/"
    # the release command is no process type that runs
    formation = json.loads(logged_in("apps", "info", "--json").stdout)["formation"]
    assert sorted(formation) == ["web"]
