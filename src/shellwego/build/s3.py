"""The artifact store of a cluster: an S3-compatible bucket every control-plane replica
reaches, with a local directory as its cache (boto3: the ``s3`` extra).

Slugs are uploaded once (content-addressed, so never overwritten) and fetched into the
cache on first use, verified by their sha256 before anything reads them. Credentials
come from boto3's own chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile,
an instance role); they are never logged nor put in errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shellwego.errors import ArtifactMissing, Unavailable
from shellwego.files import make_private_dir

from .artifacts import BlobStore, LocalArtifactStore, file_digest, slug_key, verified

T = TypeVar("T")

log = logging.getLogger(__name__)

DIGEST = re.compile(r"[0-9a-f]{64}")
MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
SMALL_MAX = 4096


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in MISSING


def _failure(exc: Exception, what: str) -> Unavailable:
    """The store's failure without anything of the request (no credentials, no URL)."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "error")
        return Unavailable(f"the artifact store failed to {what}: {code}")
    return Unavailable(f"the artifact store failed to {what}: {type(exc).__name__}")


class S3ArtifactStore(BlobStore):
    """Slugs and named blobs in ``bucket`` under ``prefix``; slugs cached in ``cache``."""

    shared = True

    def __init__(self, client: Any, bucket: str, prefix: str, cache: LocalArtifactStore) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache = cache

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cache: LocalArtifactStore,
        endpoint: str | None = None,
        region: str | None = None,
    ) -> S3ArtifactStore:
        """The store at ``s3://bucket/prefix`` (at ``endpoint``, for S3-compatible servers)."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            # path-style works with every S3-compatible server (MinIO, Ceph, Garage)
            s3={"addressing_style": "path"} if endpoint else None,
        )
        client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=region or "us-east-1", config=config
        )
        return cls(client, bucket, prefix, cache)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def where(self) -> str:
        """The store, for logs: ``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    # ---- slugs -------------------------------------------------------------------------------

    def put(self, path: Path) -> str:
        digest = self.cache.put(path)
        key = slug_key(digest)
        if not self._has(key):
            self._upload(key, self.cache.path(digest), metadata={"sha256": digest})
        return digest

    def exists(self, digest: str) -> bool:
        return self.cache.exists(digest) or self._has(slug_key(digest))

    def path(self, digest: str) -> Path:
        if self.cache.exists(digest):
            return self.cache.path(digest)
        folder = self.cache.root / digest[:2]
        make_private_dir(folder)
        fd, name = tempfile.mkstemp(prefix=f".{digest[:12]}-", dir=folder)
        os.close(fd)
        tmp = Path(name)
        try:
            if not self._download(slug_key(digest), tmp):
                raise ArtifactMissing(f"artifact {digest[:12]} not found in {self.where()}")
            return self.cache.put_verified(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)

    def open(self, digest: str) -> BinaryIO:
        return self.path(digest).open("rb")

    def publish_cached(self) -> int:
        """Upload the slugs in the local cache that the bucket lacks (built before this
        control plane used the bucket); returns how many."""
        if not self.cache.root.is_dir():
            return 0
        stored = set(self._list(""))
        count = 0
        for folder in sorted(self.cache.root.iterdir()):
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for item in sorted(folder.glob("*.tar.gz")):
                digest = item.name.removesuffix(".tar.gz")
                if not DIGEST.fullmatch(digest) or slug_key(digest) in stored:
                    continue
                verified(item, digest, f"cached artifact {digest[:12]}")
                self._upload(slug_key(digest), item, metadata={"sha256": digest})
                count += 1
        return count

    # ---- primitives --------------------------------------------------------------------------

    def _attempt(self, action: str, call: Callable[[], T]) -> T | None:
        """``call()``'s result, or None when the object is not there; any other failure
        is a :class:`StoreFailure` naming ``action`` (never the credentials)."""
        try:
            return call()
        except ClientError as exc:
            if _missing(exc):
                return None
            raise _failure(exc, action) from None
        except BotoCoreError as exc:
            raise _failure(exc, action) from None

    def _has(self, key: str) -> bool:
        def head() -> bool:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True

        return self._attempt("look up an object", head) is not None

    def _download(self, key: str, dest: Path) -> bool:
        def download() -> bool:
            self.client.download_file(self.bucket, self._key(key), str(dest))
            return True

        return self._attempt("fetch an object", download) is not None

    def _upload(self, key: str, src: Path, metadata: dict[str, str] | None = None) -> None:
        extra = {"Metadata": metadata or {"sha256": file_digest(src)}}
        try:
            self.client.upload_file(str(src), self.bucket, self._key(key), ExtraArgs=extra)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise _failure(exc, "store an object") from None

    def _read_small(self, key: str) -> bytes | None:
        def read() -> bytes:
            got = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            with contextlib.closing(got["Body"]) as body:
                data: bytes = body.read(SMALL_MAX)
            return data

        return self._attempt("fetch an object", read)

    def _write_small(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise _failure(exc, "store an object") from None

    def _delete(self, key: str) -> None:
        def delete() -> bool:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
            return True

        self._attempt("delete an object", delete)  # already gone: nothing to do

    def _list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self._key(""))
        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise _failure(exc, "list objects") from None
        return sorted(keys)
