"""The image store of a node: blobs by digest, shared by every image, and root
filesystems unpacked from them, cached by the chain of their layers' digests.

Layout under ``root``::

    blobs/sha256/<hex>        layers, configs and manifests, verified, read-only
    rootfs/<chain hex>/       an image's root filesystem (all its layers applied)

Everything appears atomically (written beside, then renamed): a blob or a root
filesystem that exists is complete. Two images with the same layers share the blobs and
the root filesystem.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shellwego.images.errors import UnsupportedImage
from shellwego.images.manifest import (
    INDEX_TYPES,
    Descriptor,
    ImageConfig,
    media_type_of,
    select_platform,
)
from shellwego.images.reference import ImageReference, is_digest, parse_reference
from shellwego.images.registry import (
    ManifestDocument,
    RegistryClient,
    platform_manifest,
    resolved_image,
)
from shellwego.images.unpack import UnpackBudget, unpack_layer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PulledImage:
    reference: ImageReference  # pinned to the digest the tag pointed at
    manifest_digest: str  # of the linux/amd64 manifest
    config: ImageConfig
    layers: tuple[str, ...]  # layer digests, lowest first
    rootfs: Path

    @property
    def digest(self) -> str:
        assert self.reference.digest is not None
        return self.reference.digest


def chain_key(layers: Sequence[str]) -> str:
    """The cache key of the root filesystem made of ``layers`` (digests, lowest first):
    like the OCI ChainID, over the layers' blob digests."""
    if not layers:
        return "sha256:" + hashlib.sha256(b"").hexdigest()
    key = layers[0]
    for digest in layers[1:]:
        key = "sha256:" + hashlib.sha256(f"{key} {digest}".encode()).hexdigest()
    return key


class ImageStore:
    def __init__(self, root: Path, budget: Callable[[], UnpackBudget] = UnpackBudget) -> None:
        """``budget``: makes the limits of one root filesystem (size, entries)."""
        self.root = root
        self._budget = budget
        self.blobs = root / "blobs" / "sha256"
        self.rootfs_dir = root / "rootfs"

    def blob_path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise UnsupportedImage(f"not a sha256 digest: {digest[:100]!r}")
        return self.blobs / digest.removeprefix("sha256:")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def rootfs_path(self, layers: Sequence[str]) -> Path:
        return self.rootfs_dir / chain_key(layers).removeprefix("sha256:")

    async def pull(
        self, client: RegistryClient, ref: ImageReference | str, parallel: int = 3
    ) -> PulledImage:
        """Resolve ``ref``, fetch what is missing of its blobs (each verified, up to
        ``parallel`` at a time) and make its root filesystem (or find it made). A pinned
        reference whose manifest, config and root filesystem are here already is served
        from the store without asking the registry."""
        reference = parse_reference(ref) if isinstance(ref, str) else ref
        local = self.cached(reference)
        if local is not None:
            return local
        image = await client.fetch_image(reference)
        for document in image.documents:
            self._keep(document.digest, document.data)
        self._keep(image.manifest.config.digest, image.config_data)
        limit = asyncio.Semaphore(max(1, parallel))

        async def fetch(layer: Descriptor) -> None:
            async with limit:
                if not self.has_blob(layer.digest):
                    await client.fetch_blob(reference, layer, self.blob_path(layer.digest))

        await asyncio.gather(*(fetch(layer) for layer in image.manifest.layers))
        rootfs = await asyncio.to_thread(
            self.materialize, image.manifest.layers, image.config.diff_ids
        )
        log.info("image %s pulled (%d layers)", image.reference, len(image.manifest.layers))
        return PulledImage(
            reference=image.reference,
            manifest_digest=image.manifest_digest,
            config=image.config,
            layers=tuple(layer.digest for layer in image.manifest.layers),
            rootfs=rootfs,
        )

    def cached(self, ref: ImageReference) -> PulledImage | None:
        """The image pinned by ``ref`` (its digest), when its manifest, config and root
        filesystem are all in the store; None otherwise (a tag is never resolved here)."""
        if not ref.digest:
            return None
        top = self._document(ref.digest)
        if top is None:
            return None
        document: ManifestDocument | None = top
        if top.media_type in INDEX_TYPES:
            document = self._document(select_platform(top.data).digest)
        if document is None:
            return None
        manifest = platform_manifest(top, document)
        config_path = self.blob_path(manifest.config.digest)
        rootfs = self.rootfs_path([layer.digest for layer in manifest.layers])
        if not config_path.is_file() or not rootfs.is_dir():
            return None
        image = resolved_image(ref, top, document, manifest, config_path.read_bytes())
        return PulledImage(
            reference=image.reference,
            manifest_digest=image.manifest_digest,
            config=image.config,
            layers=tuple(layer.digest for layer in manifest.layers),
            rootfs=rootfs,
        )

    def _document(self, digest: str) -> ManifestDocument | None:
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return ManifestDocument(data=data, media_type=media_type_of(data, None), digest=digest)

    def _keep(self, digest: str, data: bytes) -> None:
        """Store ``data`` (already verified against ``digest``) as a blob."""
        path = self.blob_path(digest)
        if not path.exists():
            _write_atomic(path, data)

    def materialize(self, layers: Sequence[Descriptor], diff_ids: Sequence[str] = ()) -> Path:
        """The root filesystem of ``layers`` (their blobs in the store), unpacked now
        unless it already is. A layer refused leaves nothing behind."""
        final = self.rootfs_path([layer.digest for layer in layers])
        if final.is_dir():
            return final
        self.rootfs_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.rootfs_dir))
        budget = self._budget()
        try:
            os.chmod(work, 0o755)
            for i, layer in enumerate(layers):
                unpack_layer(
                    self.blob_path(layer.digest),
                    work,
                    layer=layer.digest,
                    diff_id=diff_ids[i] if i < len(diff_ids) else None,
                    budget=budget,
                )
            try:
                os.rename(work, final)
            except OSError:
                if not final.is_dir():  # not made meanwhile by another pull
                    raise
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        return final


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
