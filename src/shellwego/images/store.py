"""The image store of a node: blobs by digest, shared by every image, and root
filesystems unpacked from them, cached by the chain of their layers' digests.

Layout under ``root``::

    blobs/sha256/<hex>        layers and configs, verified, read-only
    rootfs/<chain hex>/       an image's root filesystem (all its layers applied)

Everything appears atomically (written beside, then renamed): a blob or a root
filesystem that exists is complete. Two images with the same layers share the blobs and
the root filesystem.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shellwego.images.errors import UnsupportedImage
from shellwego.images.manifest import Descriptor, ImageConfig
from shellwego.images.reference import ImageReference, is_digest, parse_reference
from shellwego.images.registry import RegistryClient
from shellwego.images.unpack import unpack_layer


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
    def __init__(self, root: Path) -> None:
        self.root = root
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

    async def pull(self, client: RegistryClient, ref: ImageReference | str) -> PulledImage:
        """Resolve ``ref``, fetch what is missing of its blobs (each verified) and make
        its root filesystem (or find it made)."""
        reference = parse_reference(ref) if isinstance(ref, str) else ref
        image = await client.fetch_image(reference)
        config_path = self.blob_path(image.manifest.config.digest)
        if not config_path.exists():
            _write_atomic(config_path, image.config_data)
        for layer in image.manifest.layers:
            if not self.has_blob(layer.digest):
                await client.fetch_blob(reference, layer, self.blob_path(layer.digest))
        rootfs = await asyncio.to_thread(
            self.materialize, image.manifest.layers, image.config.diff_ids
        )
        return PulledImage(
            reference=image.reference,
            manifest_digest=image.manifest_digest,
            config=image.config,
            layers=tuple(layer.digest for layer in image.manifest.layers),
            rootfs=rootfs,
        )

    def materialize(self, layers: Sequence[Descriptor], diff_ids: Sequence[str] = ()) -> Path:
        """The root filesystem of ``layers`` (their blobs in the store), unpacked now
        unless it already is. A layer refused leaves nothing behind."""
        final = self.rootfs_path([layer.digest for layer in layers])
        if final.is_dir():
            return final
        self.rootfs_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.rootfs_dir))
        try:
            os.chmod(work, 0o755)
            for i, layer in enumerate(layers):
                unpack_layer(
                    self.blob_path(layer.digest),
                    work,
                    layer=layer.digest,
                    diff_id=diff_ids[i] if i < len(diff_ids) else None,
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
