"""Custom domains verified through DNS against a real DNS server, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from shellwego.errors import ConfigError
from shellwego.services.bootstrap import build_context
from shellwego.services.dns import DnsResolver
from shellwego.settings import Settings
from support.dns_server import DnsServer

from .realparts import Api


def add(api: Api, hostname: str, app: str = "web") -> dict[str, str]:
    if api.call("GET", f"/v1/apps/{app}").status_code == 404:
        api.ok("POST", "/v1/apps", json={"name": app})
    domain = api.ok("POST", "/v1/domains", json={"hostname": hostname, "app": app})
    assert domain["status"] == "pending"
    return {d["record_type"]: d["value"] for d in domain["dns"]}


def verify(api: Api, hostname: str) -> dict[str, str]:
    result: dict[str, str] = api.ok("POST", f"/v1/domains/{hostname}/actions/verify")
    return result


def test_verified_by_its_txt_record(api: Api, dns_server: DnsServer) -> None:
    expected = add(api, "www.example.com")["TXT"]
    challenge = "_shellwego-challenge.www.example.com"

    nothing = verify(api, "www.example.com")
    assert nothing["status"] == "pending"
    assert nothing["last_error"] == (
        f"not verified yet: {challenge} does not exist (NXDOMAIN); "
        "www.example.com does not exist (NXDOMAIN)"
    )
    assert ("TXT", challenge) in dns_server.questions

    dns_server.publish("TXT", challenge, "shellwego-verify=someone-else")
    dns_server.publish("CNAME", "www.example.com", "elsewhere.example.net")
    wrong = verify(api, "www.example.com")
    assert wrong["status"] == "pending"
    assert f'TXT {challenge} is "shellwego-verify=someone-else", expected "{expected}"' in (
        wrong["last_error"]
    )

    dns_server.publish("TXT", challenge, "v=spf1 -all", expected)
    done = verify(api, "www.example.com")
    assert (done["status"], done["tls_status"], done["last_error"]) == ("active", "acme", None)
    assert done["verified_at"]


def test_verified_by_a_cname_to_the_apps_platform_host(api: Api, dns_server: DnsServer) -> None:
    # under a local base domain no CNAME is suggested (nobody can make one point at
    # web.localhost usefully), but one that does still proves ownership
    assert "CNAME" not in add(api, "shop.example.org")
    dns_server.publish("TXT", "shop.example.org", "unrelated")  # the name exists, no CNAME
    none = verify(api, "shop.example.org")
    assert none["last_error"].endswith("; shop.example.org has no CNAME record")

    dns_server.publish("CNAME", "shop.example.org", "other.localhost")
    other = verify(api, "shop.example.org")
    assert other["status"] == "pending"
    assert other["last_error"].endswith(
        '; CNAME shop.example.org is "other.localhost", expected "web.localhost"'
    )

    dns_server.publish("CNAME", "shop.example.org", "WEB.localhost")
    done = verify(api, "shop.example.org")
    assert (done["status"], done["tls_status"]) == ("active", "acme")
    assert ("CNAME", "shop.example.org") in dns_server.questions


def test_a_resolver_that_does_not_answer_is_reported_and_changes_nothing(
    api: Api, dns_server: DnsServer
) -> None:
    add(api, "slow.example.com")
    dns_server.silent = True
    dns_server.questions.clear()
    result = verify(api, "slow.example.com")
    # it gave up after one lookup's timeout: it did not go on to ask for the other record type
    assert len({kind for kind, _ in dns_server.questions}) == 1, dns_server.questions
    assert result["status"] == "pending" and result["verified_at"] is None
    assert result["last_error"] == (
        f"DNS lookup failed: the DNS resolver {dns_server.address} did not answer within 3 s"
    )


def test_a_local_name_is_served_with_the_internal_ca(api: Api, dns_server: DnsServer) -> None:
    token = add(api, "nas.home.arpa")["TXT"]
    dns_server.publish("TXT", "_shellwego-challenge.nas.home.arpa", token)
    done = verify(api, "nas.home.arpa")
    assert (done["status"], done["tls_status"]) == ("active", "internal")


@pytest.mark.parametrize("bad", ["resolver.example", "127.0.0.1:0", "127.0.0.1:99999", "1.2.3"])
def test_a_bad_resolver_setting_is_refused_at_start(tmp_path: Path, bad: str) -> None:
    settings = Settings.from_env(
        {"SHELLWEGO_DNS_RESOLVER": bad},
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
    )
    with pytest.raises(ConfigError, match="SHELLWEGO_DNS_RESOLVER must be an IP address"):
        build_context(settings, migrate=False)


def test_the_resolver_reads_records_from_the_configured_server(dns_server: DnsServer) -> None:
    dns_server.publish("TXT", "t.example", "one", "two")
    dns_server.publish("CNAME", "c.example", "target.example")
    resolver = DnsResolver(dns_server.address)
    assert sorted(resolver("TXT", "t.example")) == ["one", "two"]
    assert resolver("CNAME", "c.example") == ["target.example"]
    assert resolver("CNAME", "t.example") == []
    assert DnsResolver(f"[::1]:{dns_server.port}").nameserver == ("::1", dns_server.port)
