"""domains, nodes, status, ps/scale, and the one-line errors."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta

from shellwego.services.dns import DnsResolver
from support.dns_server import DnsServer

from .conftest import Cli, api_get, register_node

POINT_AT_EDGE = (
    "Then point {host} at this platform's edge: an A (or AAAA) record to this server's "
    "address, or a line in /etc/hosts while you try it locally."
)


def test_domains_add_list(logged_in: Cli) -> None:
    assert logged_in("apps", "create", "hello").exit_code == 0
    assert logged_in("domains", "list").stdout == "hello has no custom domains.\n"
    r = logged_in("domains", "add", "www.example.com")
    assert r.exit_code == 0, r.stderr
    made = json.loads(logged_in("domains", "list", "--json").stdout)
    assert [d["hostname"] for d in made] == ["www.example.com"]
    shown = api_get(logged_in.api, "/v1/domains/www.example.com")
    assert isinstance(shown, dict)
    txt = next(d for d in shown["dns"] if d["record_type"] == "TXT")
    lines = r.stdout.splitlines()
    assert lines[:2] == [
        "Added www.example.com to hello (status: pending).",
        "Add these DNS records, then run: shellwego domains verify www.example.com",
    ]
    assert lines[2].split() == ["TYPE", "NAME", "VALUE"]
    assert lines[4].split() == ["TXT", txt["name"], txt["value"]]
    # the platform's app names are local (hello.localhost): no CNAME anyone could add
    assert lines[5:] == [POINT_AT_EDGE.format(host="www.example.com")]
    r = logged_in("domains", "list")
    assert r.stdout.splitlines()[0].split() == ["HOSTNAME", "STATUS", "TLS", "EXPIRES", "ERROR"]
    # a pending domain holds its hostname for a week (the default TTL), then is released
    expires = datetime.fromisoformat(shown["created_at"]) + timedelta(days=7)
    assert r.stdout.splitlines()[2].split() == [
        "www.example.com",
        "pending",
        "pending",
        *expires.strftime("%Y-%m-%d %H:%M:%SZ").split(),
        "-",
    ]
    r = logged_in("domains", "rm", "www.example.com")
    assert (r.exit_code, r.stdout) == (0, "Removed www.example.com.\n")


def test_domains_verify(logged_in: Cli) -> None:
    dns = DnsServer()
    logged_in.api.ctx.resolver = DnsResolver(dns.address, timeout=2)
    try:
        assert logged_in("apps", "create", "hello").exit_code == 0
        assert logged_in("domains", "add", "www.example.com").exit_code == 0
        shown = api_get(logged_in.api, "/v1/domains/www.example.com")
        txt = next(d for d in shown["dns"] if d["record_type"] == "TXT")

        r = logged_in("domains", "verify", "www.example.com")
        assert r.exit_code == 1, r.stderr  # not verified: a failed check
        lines = r.stdout.splitlines()
        assert lines[:3] == [
            "www.example.com: pending (TLS: pending)",
            "  not verified yet: _shellwego-challenge.www.example.com does not exist (NXDOMAIN); "
            "www.example.com does not exist (NXDOMAIN)",
            "Add these DNS records, then run: shellwego domains verify www.example.com",
        ]
        assert [row.split() for row in lines[3:4] + lines[5:6]] == [
            ["TYPE", "NAME", "VALUE"],
            ["TXT", txt["name"], txt["value"]],
        ]
        assert lines[6:] == [POINT_AT_EDGE.format(host="www.example.com")]
        r = logged_in("domains", "verify", "www.example.com", "--json")
        assert (r.exit_code, json.loads(r.stdout)["status"]) == (1, "pending")
        assert ("TXT", txt["name"]) in dns.questions

        dns.publish("TXT", txt["name"], txt["value"])
        r = logged_in("domains", "verify", "www.example.com")
        assert (r.exit_code, r.stdout, r.stderr) == (
            0,
            "www.example.com: active (TLS: acme)\n",
            "",
        )
        r = logged_in("domains", "list")
        assert r.stdout.splitlines()[2].split() == ["www.example.com", "active", "acme", "-", "-"]
        r = logged_in("domains", "verify", "nope.example.com")
        assert (r.exit_code, r.stderr) == (
            1,
            "Error: Not found: domain 'nope.example.com' not found\n",
        )
    finally:
        dns.close()


def test_nodes_and_status(logged_in: Cli) -> None:
    r = logged_in("nodes", "list")
    assert (r.exit_code, r.stdout) == (
        0,
        "No nodes have joined yet. Start one with: shellwego agent (or shellwego up)\n",
    )
    assert json.loads(logged_in("nodes", "list", "--json").stdout) == []
    assert logged_in("apps", "create", "hello").exit_code == 0
    r = logged_in("status")
    settings = logged_in.api.ctx.settings
    assert r.exit_code == 0, r.stderr
    assert r.stdout == (
        "=== ShellWeGo 0.1.0\n"
        f"API:       {settings.api_url}\n"
        "Database:  sqlite\n"
        "Apps URL:  http://{app}.localhost/\n"
        "Nodes:     none\n"
        "Apps:      1\n"
        "Instances: none\n"
    )
    assert json.loads(logged_in("--json", "status").stdout)["apps"] == 1
    r = logged_in("top", "--once")
    assert r.stdout.splitlines()[2].split() == ["hello", "0", "0.00", "0", "B", "0", "0", "-", "-"]
    # piped (not a terminal): one plain table, as with --once
    piped = logged_in("top")
    assert (piped.exit_code, piped.stdout) == (0, r.stdout)


def test_nodes_info_says_why_a_runtime_is_not_offered(logged_in: Cli) -> None:
    register_node(
        logged_in.api,
        "kvmless",
        runtimes=("process",),
        runtime_reasons={
            "microvm": "/dev/kvm is not present on this host",
            "oci": "no crun or runc found on PATH",
        },
    )
    r = logged_in("nodes", "info", "kvmless")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "Runtimes:    process" in lines
    assert "Not microvm: /dev/kvm is not present on this host" in lines
    assert "Not oci:     no crun or runc found on PATH" in lines
    found = json.loads(logged_in("nodes", "info", "kvmless", "--json").stdout)
    assert found["runtime_reasons"]["oci"] == "no crun or runc found on PATH"


def test_ps_and_scale(logged_in: Cli) -> None:
    assert logged_in("apps", "create", "hello").exit_code == 0
    r = logged_in("ps", "-a", "hello", "--json")
    assert (r.exit_code, json.loads(r.stdout)) == (0, [])
    assert logged_in("ps").stdout == "hello has no instances.\n"
    r = logged_in("scale", "web=0", "worker=2:medium")
    assert (r.exit_code, r.stdout) == (0, "Scaled hello: web=0:small, worker=2:medium\n")
    formation = json.loads(logged_in("apps", "info", "--json").stdout)["formation"]
    assert {k: (v["count"], v["size"]) for k, v in formation.items()} == {
        "web": (0, "small"),
        "worker": (2, "medium"),
    }
    for bad in ("web3", "web=x", "=3", "web=1:"):
        r = logged_in("scale", "web=1", bad)
        assert (r.exit_code, r.stdout) == (2, "")  # a usage mistake, as the README says
        assert r.stderr == (
            f"Error: {bad!r} is not TYPE=COUNT[:SIZE] (e.g. web=3 or worker=2:medium) "
            "(see: shellwego scale --help)\n"
        )
    r = logged_in("scale", "web=abc")
    assert (r.exit_code, r.stdout) == (2, "")
    r = logged_in("scale", "release=1")  # the release command is not scaled
    assert (r.exit_code, r.stderr) == (
        1,
        "Error: Invalid input: release is the release command: it runs once per release, "
        "before the rollout, and is not scaled\n",
    )
    # nothing changed
    formation = json.loads(logged_in("apps", "info", "--json").stdout)["formation"]
    assert formation["web"]["count"] == 0


def test_unknown_app_is_one_line(logged_in: Cli) -> None:
    for args in (("ps", "-a", "ghost"), ("config", "-a", "ghost"), ("releases", "-a", "ghost")):
        r = logged_in(*args)
        assert (r.exit_code, r.stdout, r.stderr) == (
            1,
            "",
            "Error: Not found: app 'ghost' not found\n",
        )


def test_unreachable_api(cli: Cli) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    r = cli("apps", "list", env={"SHELLWEGO_API_URL": url, "SHELLWEGO_TOKEN": "swg_x"})
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == (
        f"Error: cannot reach the ShellWeGo API at {url}. Is it running? "
        "Start one with: shellwego up\n"
    )


def test_not_logged_in_hint(cli: Cli) -> None:
    r = cli("apps", "list")
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == (
        "Error: Authentication required: missing bearer token: log in with `shellwego login`\n"
    )
    r = cli("apps", "list", env={"SHELLWEGO_TOKEN": "swg_not_a_token"})
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == (
        "Error: Authentication required: invalid or revoked token (run: shellwego login)\n"
    )

