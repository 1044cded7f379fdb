"""A hostile tenant on a real `shellwego up`, through the CLI as a user would.

The owner's organization runs an app. Mallory, the owner of another organization on the
same platform, deploys an app whose code, once running, tries to reach the victim's
instance and the platform's own services from inside; and asks the API for the victim's
app. Everything it tries must fail, and the victim keeps serving.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from e2e.conftest import EXAMPLES, Platform, running_platform
from support.prober import PROBER, query


def host_address() -> str:
    """This host's own address on its default route (not loopback)."""
    route = subprocess.run(
        ["ip", "-j", "-4", "route", "get", "192.0.2.123"], capture_output=True, text=True
    )
    if route.returncode != 0:
        return "127.0.0.1"
    return str(json.loads(route.stdout)[0].get("prefsrc", "127.0.0.1"))


def as_mallory(p: Platform, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**p.env, "SHELLWEGO_TOKEN": token, "SHELLWEGO_API_URL": p.api_url}
    return subprocess.run(
        [str(Path(sys.executable).parent / "shellwego"), *args],
        env=env,
        cwd=p.home,
        capture_output=True,
        text=True,
        timeout=300,
    )


def mallory_token(p: Platform) -> str:
    """A second organization with its own owner, as the platform's owner would set it up
    for a customer; Mallory's token is scoped to her organization alone."""
    owner = json.loads((p.home / "cli" / "config.json").read_text())["token"]
    auth = {"Authorization": f"Bearer {owner}"}
    login = dict(
        line.split(": ", 1) for line in (p.data_dir / "credentials.txt").read_text().splitlines()
    )
    with httpx.Client(base_url=p.api_url, timeout=30) as api:
        r = api.post("/v1/organizations", headers=auth, json={"name": "Evil", "slug": "evil"})
        assert r.status_code == 201, r.text
        r = api.post(  # the owner acting in the new organization
            "/v1/auth/token",
            json={"email": login["email"], "password": login["password"], "organization": "evil"},
        )
        assert r.status_code in (200, 201), r.text
        auth = {"Authorization": f"Bearer {r.json()['token']}"}
        r = api.post(
            "/v1/organizations/evil/members",
            headers=auth,
            json={
                "email": "mallory@example.com",
                "name": "Mallory",
                "password": "mallory's long password",
                "role": "owner",
            },
        )
        assert r.status_code == 201, r.text
        r = api.post(
            "/v1/auth/token",
            json={
                "email": "mallory@example.com",
                "password": "mallory's long password",
                "organization": "evil",
            },
        )
        assert r.status_code in (200, 201), r.text
        return str(r.json()["token"])


@pytest.mark.skipif(os.geteuid() != 0, reason="instances get networks of their own as root")
def test_another_tenants_app_reaches_nothing_of_the_victim_or_the_platform(
    tmp_path: Path,
) -> None:
    with running_platform(tmp_path / "home", "25300-25399") as p:
        p.cli("apps", "create", "victim")
        p.cli("deploy", str(EXAMPLES / "python-web"), "-a", "victim")
        p.wait_for("victim", "Hello from ShellWeGo")
        [victim] = json.loads(p.cli("ps", "-a", "victim", "--json").stdout)
        victim_address = victim["address"]  # its own network's address:port

        token = mallory_token(p)
        app = tmp_path / "prober"
        app.mkdir()
        (app / "web.py").write_text(PROBER)
        (app / "Procfile").write_text("web: python3 web.py\n")
        assert as_mallory(p, token, "apps", "create", "prober").returncode == 0
        deployed = as_mallory(p, token, "deploy", str(app), "-a", "prober")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        p.wait_for("prober", '"uid"')

        victim_port = victim_address.rpartition(":")[2]
        targets = {
            "victim instance": victim_address,
            "victim port on loopback": f"127.0.0.1:{victim_port}",
            "api on loopback": f"127.0.0.1:{p.api_port}",
            "api on the host's address": f"{host_address()}:{p.api_port}",
            "edge on the host's address": f"{host_address()}:{p.http_port}",
            "postgres on the host": f"{host_address()}:5432",
        }
        answer = p.get("prober", "/" + query(targets)).json()
        assert answer["uid"] != 0
        assert len(answer["seen"]) == len(targets), answer
        assert not any(v.startswith("ok") for v in answer["seen"].values()), answer

        # the API: the victim's app does not exist for Mallory, nothing of it changes
        assert as_mallory(p, token, "ps", "-a", "victim").returncode == 1
        assert as_mallory(p, token, "config", "set", "X=1", "-a", "victim").returncode == 1
        assert as_mallory(p, token, "apps", "delete", "victim", "--yes").returncode == 1
        [still] = json.loads(p.cli("ps", "-a", "victim", "--json").stdout)
        assert still["id"] == victim["id"] and still["healthy"]
        assert "Hello from ShellWeGo" in p.get("victim").text
