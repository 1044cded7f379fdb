"""The artifact-store interface, run against both stores: the local directory and an
S3-compatible bucket (moto's server); and the cluster-wide lock builds and pushes take."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import boto3
import pytest

from shellwego.build.artifacts import (
    ArtifactStore,
    LocalArtifactStore,
    extract_slug,
    open_store,
    slug_key,
)
from shellwego.build.s3 import S3ArtifactStore
from shellwego.errors import ArtifactMissing, ConfigError, InvalidInput, NotFound, RuntimeFailure
from shellwego.settings import Settings
from shellwego.store import Database
from shellwego.store.locks import cluster_lock

from .test_artifacts import slug_file


def _s3(root: Path, endpoint: str, bucket: str) -> S3ArtifactStore:
    return S3ArtifactStore.from_url(
        f"s3://{bucket}/cluster", cache=LocalArtifactStore(root), endpoint=endpoint
    )


@pytest.fixture(params=["local", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def stores(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[ArtifactStore, ...]:
    """Two handles on one store, as two replicas hold them (each its own local cache)."""
    if kind == "local":
        one = LocalArtifactStore(tmp_path / "store")
        return one, one
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket: str = request.getfixturevalue("s3_bucket")
    return _s3(tmp_path / "a", endpoint, bucket), _s3(tmp_path / "b", endpoint, bucket)


def test_slugs_round_trip_by_digest(stores: tuple[ArtifactStore, ...], tmp_path: Path) -> None:
    here, there = stores
    src = slug_file(tmp_path / "slug.tar.gz", {"Procfile": b"web: x\n", "app.py": b"print()\n"})
    digest = here.put(src)
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert here.put(src) == digest  # the same bytes again: a no-op
    assert isinstance(here, ArtifactStore)
    assert there.exists(digest)
    assert there.path(digest).read_bytes() == src.read_bytes()
    with there.open(digest) as handle:
        assert handle.read() == src.read_bytes()
    out = extract_slug(there, digest, tmp_path / "extracted")
    assert (out / "Procfile").read_bytes() == b"web: x\n"


def test_a_missing_slug_is_artifact_missing(stores: tuple[ArtifactStore, ...]) -> None:
    _, there = stores
    digest = "ab" * 32
    assert not there.exists(digest)
    with pytest.raises(ArtifactMissing) as caught:
        there.path(digest)
    assert isinstance(caught.value, NotFound)
    assert caught.value.slug == "artifact-missing"
    with pytest.raises(InvalidInput):
        there.exists("../../etc/passwd")


def test_named_blobs_are_replaced_and_verified(
    stores: tuple[ArtifactStore, ...], tmp_path: Path
) -> None:
    here, there = stores
    first = tmp_path / "one.bundle"
    first.write_bytes(b"first version\n")
    second = tmp_path / "two.bundle"
    second.write_bytes(os.urandom(300_000))
    assert there.named_digest("git/app1") is None
    assert there.get_named("git/app1", tmp_path / "none") is None
    d1 = here.put_named("git/app1", first)
    assert there.named_digest("git/app1") == d1
    assert there.get_named("git/app1", tmp_path / "got1") == d1
    assert (tmp_path / "got1").read_bytes() == first.read_bytes()
    d2 = here.put_named("git/app1", second)
    assert d2 != d1
    assert there.get_named("git/app1", tmp_path / "got2") == d2
    assert (tmp_path / "got2").read_bytes() == second.read_bytes()
    # names are their own: another app's blob is untouched
    here.put_named("git/app2", first)
    here.delete_named("git/app1")
    here.delete_named("git/app1")  # a repeat does nothing
    assert there.named_digest("git/app1") is None
    assert there.named_digest("git/app2") == d1
    for bad in ("../x", "git/../../x", "git/a@b", "/abs", ""):
        with pytest.raises(InvalidInput):
            here.named_digest(bad)


def test_a_damaged_stored_slug_is_refused(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    """What another replica fetches is verified by its sha256 before anything uses it."""
    here = _s3(tmp_path / "a", s3_endpoint, s3_bucket)
    there = _s3(tmp_path / "b", s3_endpoint, s3_bucket)
    digest = here.put(slug_file(tmp_path / "slug.tar.gz", {"Procfile": b"web: x\n"}))
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.put_object(Bucket=s3_bucket, Key=f"cluster/{slug_key(digest)}", Body=b"tampered")
    with pytest.raises(RuntimeFailure, match="failed verification"):
        there.path(digest)
    assert not there.cache.exists(digest)  # nothing unverified is kept
    assert [p for p in (tmp_path / "b").rglob("*") if p.is_file()] == []
    # the named blobs too
    good = tmp_path / "repo.bundle"
    good.write_bytes(b"bundle\n")
    named = here.put_named("git/app", good)
    client.put_object(Bucket=s3_bucket, Key=f"cluster/named/git/app@{named}", Body=b"evil")
    with pytest.raises(RuntimeFailure, match="failed verification"):
        there.get_named("git/app", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_settings_pick_the_store(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    base = {"SHELLWEGO_DATA_DIR": str(tmp_path)}
    local = open_store(Settings.from_env(base))
    assert isinstance(local, LocalArtifactStore) and not local.shared
    assert Settings.from_env({**base, "SHELLWEGO_ARTIFACT_STORE": "local"}).artifact_store is None
    env = {
        **base,
        "SHELLWEGO_ARTIFACT_STORE": f"s3://{s3_bucket}/prefix/",
        "SHELLWEGO_S3_ENDPOINT": s3_endpoint,
    }
    settings = Settings.from_env(env)
    assert settings.artifact_store == f"s3://{s3_bucket}/prefix"
    shared = open_store(settings)
    assert isinstance(shared, S3ArtifactStore) and shared.shared
    assert shared.prefix == "prefix"
    assert shared.cache.root == tmp_path / "artifacts"
    assert "testing" not in repr(vars(settings))  # credentials are never in settings
    for bad in ("ftp://x/y", "s3://", "s3://UPPER/x", "/var/artifacts"):
        with pytest.raises(ConfigError, match="SHELLWEGO_ARTIFACT_STORE"):
            Settings.from_env({**base, "SHELLWEGO_ARTIFACT_STORE": bad})


def test_store_failures_name_no_credentials(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    store = S3ArtifactStore.from_url(
        "s3://no-such-bucket-here/x", cache=LocalArtifactStore(tmp_path), endpoint=s3_endpoint
    )
    with pytest.raises(Exception) as caught:
        store.put(slug_file(tmp_path / "slug.tar.gz", {"a": b"b"}))
    assert "NoSuchBucket" in str(caught.value)
    assert "testing" not in str(caught.value)


async def test_the_cluster_lock_excludes_another_replica(database_url: str) -> None:
    """Two replicas (two engines) on one database: one holder of a name at a time;
    other names are free."""
    one, two = Database(database_url), Database(database_url)
    try:
        held = asyncio.Event()
        release = asyncio.Event()
        order: list[str] = []

        async def first() -> None:
            async with cluster_lock(one, "build:app"):
                order.append("one in")
                held.set()
                await release.wait()
                order.append("one out")

        async def second() -> None:
            await held.wait()
            async with cluster_lock(two, "build:app"):
                order.append("two in")

        tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
        await held.wait()
        async with cluster_lock(two, "build:other"):  # another name: not blocked
            order.append("other")
        await asyncio.sleep(0.3)
        assert "two in" not in order
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert order == ["one in", "other", "one out", "two in"]
        # a holder that fails releases the lock
        with pytest.raises(RuntimeError):
            async with cluster_lock(one, "build:app"):
                raise RuntimeError("boom")
        async with asyncio.timeout(30), cluster_lock(two, "build:app"):
            pass
    finally:
        one.dispose()
        two.dispose()


def test_slugs_built_before_the_bucket_are_published(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    """A control plane moved to a shared store puts the slugs it built alone in it."""
    local = LocalArtifactStore(tmp_path / "a")
    digest = local.put(slug_file(tmp_path / "slug.tar.gz", {"Procfile": b"web: x\n"}))
    here = _s3(tmp_path / "a", s3_endpoint, s3_bucket)
    there = _s3(tmp_path / "b", s3_endpoint, s3_bucket)
    assert not there.exists(digest)
    assert here.publish_cached() == 1
    assert here.publish_cached() == 0  # once
    assert there.path(digest).read_bytes() == (tmp_path / "slug.tar.gz").read_bytes()
