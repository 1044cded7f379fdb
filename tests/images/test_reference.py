"""Image references resolve as Docker resolves them; manifests and configs parse."""

from __future__ import annotations

import json

import pytest

from shellwego.images.errors import InvalidReference, UnsupportedImage
from shellwego.images.manifest import ImageConfig, select_platform
from shellwego.images.reference import parse_reference
from shellwego.images.registry import (
    Credentials,
    RegistryOptions,
    parse_challenge,
    plain_http_allowed,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("python:3.12", "registry-1.docker.io", "library/python", "3.12", None),
        ("python", "registry-1.docker.io", "library/python", "latest", None),
        ("docker.io/library/redis:7", "registry-1.docker.io", "library/redis", "7", None),
        ("bitnami/redis", "registry-1.docker.io", "bitnami/redis", "latest", None),
        ("ghcr.io/org/app:v1", "ghcr.io", "org/app", "v1", None),
        ("127.0.0.1:5000/app:v2", "127.0.0.1:5000", "app", "v2", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("[::1]:5000/a/b", "[::1]:5000", "a/b", "latest", None),
        (f"app@{DIGEST}", "registry-1.docker.io", "library/app", None, DIGEST),
        (f"host:5000/app:v1@{DIGEST}", "host:5000", "app", "v1", DIGEST),
    ],
)
def test_references_resolve_like_docker(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert ref.reference == (digest or tag)
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    "text",
    [
        "",
        "UPPER/case",
        "app:",
        "app@sha256:short",
        "a b",
        "app:bad/tag",
        "-app",
        "a//b",
        "host:x:y/a",
    ],
)
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_reference(text)


def test_plain_http_only_for_loopback_or_listed_registries() -> None:
    none = RegistryOptions()
    for host in ("127.0.0.1:5000", "127.3.4.5", "localhost:5000", "[::1]:5000", "::1"):
        assert plain_http_allowed(host, none), host
    for host in ("10.0.0.5:5000", "registry.example.com", "localhost.example.com:5000"):
        assert not plain_http_allowed(host, none), host
    listed = RegistryOptions(insecure_registries=frozenset({"10.0.0.5:5000", "lan-registry"}))
    assert plain_http_allowed("10.0.0.5:5000", listed)
    assert not plain_http_allowed("10.0.0.5:5001", listed)
    assert plain_http_allowed("lan-registry:443", listed)


def test_bearer_challenges_parse_and_credentials_hide_the_password() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:org/app:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:org/app:pull",
    }
    assert "hunter2" not in repr(Credentials("me", "hunter2"))


def test_image_config_is_typed() -> None:
    config = ImageConfig.parse(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {
                    "Entrypoint": ["/docker-entrypoint.sh"],
                    "Cmd": ["nginx", "-g", "daemon off;"],
                    "Env": ["PATH=/usr/bin:/bin", "EMPTY=", "A=b=c"],
                    "WorkingDir": "/srv",
                    "User": "101:101",
                    "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8080": {}},
                },
                "rootfs": {"type": "layers", "diff_ids": [DIGEST]},
            }
        ).encode()
    )
    assert config.argv == ("/docker-entrypoint.sh", "nginx", "-g", "daemon off;")
    assert config.env == {"PATH": "/usr/bin:/bin", "EMPTY": "", "A": "b=c"}
    assert (config.working_dir, config.user) == ("/srv", "101:101")
    assert config.exposed_ports == ((53, "udp"), (80, "tcp"), (8080, "tcp"))
    assert config.diff_ids == (DIGEST,)
    assert ImageConfig.parse(b'{"config": null}').working_dir == "/"
    with pytest.raises(UnsupportedImage):
        ImageConfig.parse(b'{"config": {"ExposedPorts": {"99999/tcp": {}}}}')


def test_an_index_without_linux_amd64_says_what_it_offers() -> None:
    index = {
        "manifests": [
            {"digest": DIGEST, "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": DIGEST, "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}},
        ]
    }
    with pytest.raises(UnsupportedImage, match="linux/arm64"):
        select_platform(json.dumps(index).encode())
