"""Pulls from a real registry (Debian's docker-registry): tag resolution, multi-arch
indexes, digest verification, basic and bearer-token auth, and plain HTTP only where
it is allowed."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from shellwego.images.errors import (
    DigestMismatch,
    ImageNotFound,
    InsecureRegistry,
    RegistryAuthFailed,
    RegistryUnavailable,
    UnsafeLayer,
    UnsupportedImage,
)
from shellwego.images.reference import parse_reference
from shellwego.images.registry import Credentials, RegistryClient, RegistryOptions
from shellwego.images.store import ImageStore
from support.registry import (
    REGISTRY_BIN,
    Entry,
    Registry,
    TokenServer,
    htpasswd_line,
    make_layer,
    push_image,
    push_index,
    run_registry,
)

pytestmark = pytest.mark.skipif(
    not os.path.exists(REGISTRY_BIN), reason="docker-registry (Debian package) not installed"
)

BASE = make_layer(
    [
        Entry("etc", "dir", mode=0o755),
        Entry("etc/os-release", data=b"ID=tiny\n"),
        Entry("etc/motd", data=b"hello\n"),
        Entry("app", "dir", mode=0o755),
        Entry("app/run", data=b"#!/bin/sh\necho hi\n", mode=0o755),
    ]
)
UPPER = make_layer(
    [
        Entry("etc/.wh.motd"),
        Entry("app/version", data=b"2\n"),
        Entry("usr", "dir", mode=0o755),
        Entry("usr/bin", "symlink", target="/app"),
    ]
)
CONFIG = {
    "Entrypoint": ["/app/run"],
    "Cmd": ["--serve"],
    "Env": ["PATH=/app:/usr/bin", "MODE=prod"],
    "WorkingDir": "/app",
    "User": "1000",
    "ExposedPorts": {"8000/tcp": {}},
}


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with run_registry(tmp_path / "registry") as reg:
        yield reg


async def test_a_tag_resolves_to_its_digest_and_pulls_into_a_rootfs(
    registry: Registry, tmp_path: Path
) -> None:
    ref = parse_reference(f"{registry.host}/shop/web:v1")
    async with RegistryClient() as client:
        pushed = await push_image(client, ref, [BASE, UPPER], **CONFIG)
        assert await client.resolve(ref) == pushed
        store = ImageStore(tmp_path / "images")
        image = await store.pull(client, ref)
    assert image.digest == pushed
    assert image.manifest_digest == pushed
    assert str(image.reference) == f"{registry.host}/shop/web:v1@{pushed}"
    assert image.config.argv == ("/app/run", "--serve")
    assert image.config.env == {"PATH": "/app:/usr/bin", "MODE": "prod"}
    assert (image.config.working_dir, image.config.user) == ("/app", "1000")
    assert image.config.exposed_ports == ((8000, "tcp"),)
    assert image.layers == (BASE.digest, UPPER.digest)
    assert (image.rootfs / "etc/os-release").read_text() == "ID=tiny\n"
    assert not (image.rootfs / "etc/motd").exists()
    assert (image.rootfs / "app/version").read_text() == "2\n"
    assert os.readlink(image.rootfs / "usr/bin") == "/app"
    for digest in (BASE.digest, UPPER.digest):
        assert store.has_blob(digest)

    # a second image sharing the base layer shares its blob; pinned pulls need no tag
    other = parse_reference(f"{registry.host}/shop/api:v1")
    async with RegistryClient() as client:
        await push_image(client, other, [BASE], Cmd=["sh"])
        pinned = await store.pull(client, parse_reference(f"{registry.host}/shop/web@{pushed}"))
        api = await store.pull(client, other)
    assert pinned.rootfs == image.rootfs  # cached by the layer chain
    assert api.rootfs != image.rootfs
    assert len(os.listdir(store.blobs)) == 6  # 2 layers + 2 configs + 2 manifests


async def test_a_pinned_image_in_the_store_needs_no_registry(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    with run_registry(tmp_path / "registry") as registry:
        ref = parse_reference(f"{registry.host}/shop/web:v1")
        async with RegistryClient() as client:
            await push_image(client, ref, [BASE, UPPER], **CONFIG)
            image = await store.pull(client, ref)
    # the registry is gone: the pinned image is served from the store, the tag is not
    async with RegistryClient() as client:
        again = await store.pull(client, image.reference)
        assert again == image
        with pytest.raises(RegistryUnavailable):
            await store.pull(client, ref)
    assert store.cached(ref) is None  # a tag is never resolved from the store


async def test_unknown_repositories_and_tags_are_clear_errors(registry: Registry) -> None:
    async with RegistryClient() as client:
        with pytest.raises(ImageNotFound):
            await client.resolve(parse_reference(f"{registry.host}/nobody/here:v1"))
        ref = parse_reference(f"{registry.host}/shop/web:v1")
        await push_image(client, ref, [BASE])
        with pytest.raises(ImageNotFound):
            await client.fetch_image(parse_reference(f"{registry.host}/shop/web:v9"))


async def test_a_multi_arch_index_picks_linux_amd64(registry: Registry, tmp_path: Path) -> None:
    ref = parse_reference(f"{registry.host}/multi/app:v1")
    arm_layer = make_layer([Entry("arch", data=b"arm64\n")])
    amd_layer = make_layer([Entry("arch", data=b"amd64\n")])
    async with RegistryClient() as client:
        arm = await push_image(
            client, parse_reference(f"{registry.host}/multi/app:arm"), [arm_layer], arch="arm64"
        )
        amd = await push_image(
            client, parse_reference(f"{registry.host}/multi/app:amd"), [amd_layer]
        )
        sizes = {}
        for digest in (arm, amd):
            sizes[digest] = len((await client.get_manifest(ref, digest)).data)
        index = await push_index(
            client, ref, [(arm, "arm64", sizes[arm]), (amd, "amd64", sizes[amd])]
        )
        assert await client.resolve(ref) == index
        image = await ImageStore(tmp_path / "images").pull(client, ref)
        assert image.digest == index  # the release pins what the tag pointed at
        assert image.manifest_digest == amd
        assert (image.rootfs / "arch").read_text() == "amd64\n"
        cached = ImageStore(tmp_path / "images").cached(image.reference)
        assert cached is not None and cached.manifest_digest == amd

        only_arm = parse_reference(f"{registry.host}/multi/armonly:v1")
        await push_image(
            client, parse_reference(f"{registry.host}/multi/armonly:arm"), [arm_layer], arch="arm64"
        )
        await push_index(client, only_arm, [(arm, "arm64", sizes[arm])])
        with pytest.raises(UnsupportedImage, match="linux/arm64"):
            await client.fetch_image(only_arm)
        # a single-arch image for another architecture
        with pytest.raises(UnsupportedImage, match="arm64"):
            await client.fetch_image(parse_reference(f"{registry.host}/multi/app:arm"))


async def test_a_tampered_blob_is_refused_and_nothing_kept(
    registry: Registry, tmp_path: Path
) -> None:
    ref = parse_reference(f"{registry.host}/shop/web:v1")
    async with RegistryClient() as client:
        await push_image(client, ref, [BASE, UPPER], **CONFIG)
    data = registry.blob_data(UPPER.digest)
    tampered = bytearray(data.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF  # same size, different content
    data.write_bytes(bytes(tampered))
    store = ImageStore(tmp_path / "images")
    async with RegistryClient() as client:
        with pytest.raises(DigestMismatch, match=UPPER.digest):
            await store.pull(client, ref)
    assert not store.has_blob(UPPER.digest)
    assert [p.name for p in store.blobs.iterdir() if p.name.startswith(".")] == []
    assert not store.rootfs_dir.exists() or list(store.rootfs_dir.iterdir()) == []


async def test_basic_auth(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_line("deployer", "s3cret-pass"))
    auth = f"  htpasswd:\n    realm: test-realm\n    path: {htpasswd}\n"
    with run_registry(tmp_path / "registry", auth=auth) as registry:
        ref = parse_reference(f"{registry.host}/private/app:v1")
        good = {registry.host: Credentials("deployer", "s3cret-pass")}
        async with RegistryClient(good) as client:
            pushed = await push_image(client, ref, [BASE], **CONFIG)
            image = await ImageStore(tmp_path / "images").pull(client, ref)
            assert image.digest == pushed
        async with RegistryClient() as client:
            with pytest.raises(RegistryAuthFailed, match="wants credentials"):
                await client.resolve(ref)
        async with RegistryClient({registry.host: Credentials("deployer", "wrong-pass")}) as client:
            with pytest.raises(RegistryAuthFailed, match="refused the credentials") as info:
                await client.resolve(ref)
            assert "wrong-pass" not in str(info.value)


async def test_bearer_token_auth(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    with (
        TokenServer(tmp_path, "robot", "t0ken-pass") as tokens,
        run_registry(tmp_path / "registry", auth=tokens.auth_section()) as registry,
    ):
        ref = parse_reference(f"{registry.host}/private/app:v1")
        creds = {registry.host: Credentials("robot", "t0ken-pass")}
        async with RegistryClient(creds) as client:
            pushed = await push_image(client, ref, [BASE, UPPER], **CONFIG)
            image = await ImageStore(tmp_path / "images").pull(client, ref)
            # an expired token (here: one the registry does not accept) is renewed
            scope = "repository:private/app:pull"
            client._tokens[(registry.host, scope)] = "expired.token.value"
            assert await client.resolve(ref) == pushed
        assert image.digest == pushed
        assert (image.rootfs / "app/version").exists()
        scopes = {s for r in tokens.requests for s in r["query"].get("scope", [])}
        assert "repository:private/app:pull" in scopes
        assert "repository:private/app:pull,push" in scopes
        assert all(r["query"].get("service") == ["test-registry"] for r in tokens.requests)

        async with RegistryClient() as client:
            with pytest.raises(RegistryAuthFailed, match="wants credentials"):
                await client.resolve(ref)
        async with RegistryClient({registry.host: Credentials("robot", "nope-pass")}) as client:
            with pytest.raises(RegistryAuthFailed) as info:
                await client.resolve(ref)
            assert "nope-pass" not in str(info.value)


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


async def test_plain_http_to_a_non_loopback_registry_is_refused(tmp_path: Path) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    with run_registry(tmp_path / "registry", addr=address) as registry:
        ref = parse_reference(f"{registry.host}/lan/app:v1")
        async with RegistryClient() as client:
            with pytest.raises(InsecureRegistry, match="loopback"):
                await client.resolve(ref)
        listed = RegistryOptions(insecure_registries=frozenset({registry.host}))
        async with RegistryClient(options=listed) as client:
            pushed = await push_image(client, ref, [BASE])
            assert await client.resolve(ref) == pushed


async def test_a_layer_refused_by_the_unpacker_fails_the_pull(
    registry: Registry, tmp_path: Path
) -> None:
    hostile = make_layer(
        [Entry("etc", "symlink", target="/etc"), Entry("etc/cron.d/x", data=b"* * * * * root sh\n")]
    )
    ref = parse_reference(f"{registry.host}/evil/app:v1")
    store = ImageStore(tmp_path / "images")
    async with RegistryClient() as client:
        await push_image(client, ref, [BASE, hostile])
        with pytest.raises(UnsafeLayer):
            await store.pull(client, ref)
    assert list(store.rootfs_dir.iterdir()) == []


async def test_a_layer_larger_than_allowed_is_not_fetched(
    registry: Registry, tmp_path: Path
) -> None:
    ref = parse_reference(f"{registry.host}/shop/big:v1")
    store = ImageStore(tmp_path / "images")
    async with RegistryClient() as client:
        await push_image(client, ref, [BASE])
    async with RegistryClient(options=RegistryOptions(max_blob_bytes=10)) as client:
        with pytest.raises(UnsupportedImage, match="more than the 10 allowed"):
            await store.pull(client, ref)
    assert not store.has_blob(BASE.digest)
