"""A build that fails and a release that crashes, while a previous release is serving:
the failure is reported and the previous release keeps answering through the edge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import EXAMPLES, Platform, running_platform

SERVING = "Hello from a static site on ShellWeGo!"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("failures"), ports="30000-32999") as p:
        yield p


def source(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def serving_versions(platform: Platform, app: str) -> set[int]:
    rows = json.loads(platform.cli("ps", "-a", app, "--json").stdout)
    return {i["release_version"] for i in rows if i["desired_state"] == "running"}


def test_failed_build_and_failed_deploy_leave_the_previous_release_serving(
    platform: Platform, tmp_path: Path
) -> None:
    platform.cli("apps", "create", "keeper")
    platform.cli("deploy", str(EXAMPLES / "static-site"), "-a", "keeper")
    assert platform.wait_for("keeper", SERVING).status_code == 200

    # the build fails: no release is made
    broken = source(
        tmp_path / "broken",
        {"Procfile": "web: python -m http.server $PORT\n", "requirements.txt": "not a (pkg\n"},
    )
    r = platform.cli("deploy", str(broken), "-a", "keeper", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith("Error: deploy failed: "), r.stderr
    assert "failed" in r.stderr.splitlines()[0]
    answer = platform.get("keeper")
    assert (answer.status_code, SERVING in answer.text) == (200, True)
    releases = json.loads(platform.cli("releases", "-a", "keeper", "--json").stdout)
    assert [rel["version"] for rel in releases] == [1]

    # the build works but the release crashes as it starts: the deployment fails
    crashing = source(
        tmp_path / "crashing",
        {"Procfile": "web: python3 -c 'raise SystemExit(3)'\n", "requirements.txt": ""},
    )
    r = platform.cli("deploy", str(crashing), "-a", "keeper", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("Error: deploy failed: deployment of v2 failed: web instance "), first
    assert "crashed 3 times: exited with code 3;" in first
    assert first.endswith("v2 stopped, the previous release keeps serving")
    answer = platform.get("keeper")
    assert (answer.status_code, SERVING in answer.text) == (200, True)
    assert serving_versions(platform, "keeper") == {1}


def test_the_release_phase_gates_the_rollout(platform: Platform, tmp_path: Path) -> None:
    """A ``release:`` command runs once per release before its rollout, in the new
    release's environment; when it fails the release is not rolled out. A rollback
    brings back the target's config, and the release phase runs for it too."""
    procfile = (
        "web: python3 -m http.server $PORT\n"
        'release: test ! -e fail-release && echo "migrated $SHELLWEGO_RELEASE ${STAGE:-none}"\n'
    )
    v1 = source(tmp_path / "v1", {"Procfile": procfile, "index.html": "version one\n"})
    platform.cli("apps", "create", "migrator")
    r = platform.cli("deploy", str(v1), "-a", "migrator")
    lines = r.stdout.splitlines()
    start = lines.index("-----> Running release command: " + procfile.splitlines()[1][9:])
    assert lines[start + 1 : start + 3] == [
        "       migrated v1 none",
        "-----> Release command of v1 succeeded",
    ]
    assert platform.wait_for("migrator", "version one").status_code == 200

    # the release command fails: v2 is never rolled out, v1 keeps answering
    v2 = source(
        tmp_path / "v2",
        {"Procfile": procfile, "index.html": "version two\n", "fail-release": ""},
    )
    r = platform.cli("deploy", str(v2), "-a", "migrator", check=False)
    failed = "release command of v2 failed (exit code 1): v2 was not rolled out, v1 keeps serving"
    assert (r.returncode, r.stderr) == (1, f"Error: deploy failed: {failed}\n"), r.stdout
    assert f"-----> R{failed[1:]}" in r.stdout.splitlines()
    answer = platform.get("migrator")
    assert (answer.status_code, answer.text) == (200, "version one\n")
    assert serving_versions(platform, "migrator") == {1}
    events = json.loads(platform.cli("events", "-a", "migrator", "--json").stdout)
    assert [e["message"] for e in events if e["type"] == "release.failed"] == [failed]

    # a config change is a release: its release command sees the new config
    r = platform.cli("config", "set", "STAGE=blue", "-a", "migrator")
    assert r.stdout.splitlines()[-3:] == [
        "       migrated v3 blue",
        "-----> Release command of v3 succeeded",
        "Setting STAGE and restarting migrator... done, v3",
    ]
    info = platform.cli("apps", "info", "-a", "migrator").stdout.splitlines()
    assert "Release:   v3" in info  # (v1's instances may still be draining)
    # a rollback to v1 restores v1's config (no STAGE) and runs v4's release command
    r = platform.cli("rollback", "v1", "-a", "migrator")
    assert r.stdout.splitlines()[-3:] == [
        "       migrated v4 none",
        "-----> Release command of v4 succeeded",
        "Rolling back migrator to v1... done, v4",
    ]
    assert platform.cli("config", "-a", "migrator").stdout == "migrator has no config vars.\n"
    answer = platform.get("migrator")
    assert (answer.status_code, answer.text) == (200, "version one\n")
