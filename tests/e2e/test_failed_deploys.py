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
