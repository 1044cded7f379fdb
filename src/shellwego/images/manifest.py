"""Manifests, indexes and image configs of the OCI image spec and Docker's v2 schema 2."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shellwego.images.errors import UnsupportedImage
from shellwego.images.reference import is_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
# the Accept header of manifest requests, in order of preference
ACCEPT_MANIFESTS = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))

# layer media type -> compression ("gzip" or "" for a plain tar)
LAYER_TYPES = {
    OCI_LAYER: "",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN: "gzip",
}

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 8 * 1024 * 1024

# the platform images run on
PLATFORM_OS = "linux"
PLATFORM_ARCH = "amd64"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None

    @classmethod
    def parse(cls, raw: Any, what: str) -> Descriptor:
        if not isinstance(raw, dict):
            raise UnsupportedImage(f"malformed {what} descriptor")
        digest, size = raw.get("digest"), raw.get("size")
        if not isinstance(digest, str) or not is_digest(digest):
            raise UnsupportedImage(f"{what} descriptor without a sha256 digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UnsupportedImage(f"{what} descriptor {digest} without a valid size")
        platform = raw.get("platform")
        return cls(
            media_type=str(raw.get("mediaType", "")),
            digest=digest,
            size=size,
            platform=platform if isinstance(platform, dict) else None,
        )


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise UnsupportedImage(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise UnsupportedImage(f"{what} is not a JSON object")
    return doc


def media_type_of(data: bytes, content_type: str | None) -> str:
    """A manifest's media type: its ``mediaType`` member, else the Content-Type header."""
    doc = _load(data, "manifest")
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if content_type:
        return content_type.split(";", 1)[0].strip()
    if "manifests" in doc:
        return OCI_INDEX
    return OCI_MANIFEST


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @classmethod
    def parse(cls, data: bytes, media_type: str) -> Manifest:
        doc = _load(data, "manifest")
        if doc.get("schemaVersion") != 2:
            raise UnsupportedImage(
                "manifest schemaVersion is not 2 (schema 1 images are not supported)"
            )
        config = Descriptor.parse(doc.get("config"), "config")
        raw_layers = doc.get("layers")
        if not isinstance(raw_layers, list):
            raise UnsupportedImage("manifest without a layers list")
        layers = tuple(Descriptor.parse(item, "layer") for item in raw_layers)
        for layer in layers:
            if layer.media_type not in LAYER_TYPES:
                raise UnsupportedImage(
                    f"layer {layer.digest} has media type {layer.media_type[:100]!r}, "
                    "which is not supported (tar or tar+gzip layers only)"
                )
        return cls(media_type=media_type, config=config, layers=layers)


def select_platform(
    data: bytes, os_name: str = PLATFORM_OS, arch: str = PLATFORM_ARCH
) -> Descriptor:
    """The manifest of an index (or Docker manifest list) for ``os_name``/``arch``."""
    doc = _load(data, "index")
    raw = doc.get("manifests")
    if not isinstance(raw, list):
        raise UnsupportedImage("index without a manifests list")
    offered: list[str] = []
    chosen: Descriptor | None = None
    for item in raw:
        entry = Descriptor.parse(item, "index entry")
        platform = entry.platform or {}
        p_os, p_arch = platform.get("os"), platform.get("architecture")
        if p_os == "unknown":  # attestations and signatures ride in indexes as "unknown/unknown"
            continue
        offered.append(
            f"{p_os}/{p_arch}" + (f"/{platform['variant']}" if platform.get("variant") else "")
        )
        if p_os == os_name and p_arch == arch and chosen is None:
            chosen = entry
    if chosen is None:
        listing = ", ".join(sorted(set(offered))) or "none"
        raise UnsupportedImage(
            f"image has no {os_name}/{arch} variant (it offers: {listing[:300]})"
        )
    return chosen


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # Docker accepts a string here, as a shell form
        return ("/bin/sh", "-c", value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UnsupportedImage(f"image config {what} is not a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class ImageConfig:
    """What an image says about how to run it."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = "/"
    user: str = ""
    exposed_ports: tuple[tuple[int, str], ...] = ()  # (port, "tcp"|"udp"), sorted
    os: str = PLATFORM_OS
    architecture: str = PLATFORM_ARCH
    diff_ids: tuple[str, ...] = ()  # uncompressed layer digests, in order
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def argv(self) -> tuple[str, ...]:
        """The command a container runs by default: ENTRYPOINT followed by CMD."""
        return self.entrypoint + self.cmd

    @classmethod
    def parse(cls, data: bytes) -> ImageConfig:
        doc = _load(data, "image config")
        conf = doc.get("config") or {}
        if not isinstance(conf, dict):
            raise UnsupportedImage("image config 'config' is not an object")
        env: dict[str, str] = {}
        for item in _str_list(conf.get("Env"), "Env") if isinstance(conf.get("Env"), list) else ():
            name, sep, value = item.partition("=")
            if name:
                env[name] = value if sep else ""
        ports: set[tuple[int, str]] = set()
        raw_ports = conf.get("ExposedPorts") or {}
        if not isinstance(raw_ports, dict):
            raise UnsupportedImage("image config ExposedPorts is not an object")
        for key in raw_ports:
            number, _, proto = str(key).partition("/")
            try:
                port = int(number)
            except ValueError:
                raise UnsupportedImage(
                    f"image config exposes an invalid port {str(key)[:40]!r}"
                ) from None
            if not 0 < port < 65536 or (proto or "tcp") not in ("tcp", "udp", "sctp"):
                raise UnsupportedImage(f"image config exposes an invalid port {str(key)[:40]!r}")
            ports.add((port, proto or "tcp"))
        rootfs = doc.get("rootfs") or {}
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if diff_ids is not None and (
            not isinstance(diff_ids, list)
            or not all(isinstance(d, str) and is_digest(d) for d in diff_ids)
        ):
            raise UnsupportedImage("image config rootfs.diff_ids are not sha256 digests")
        labels = conf.get("Labels") or {}
        return cls(
            entrypoint=_str_list(conf.get("Entrypoint"), "Entrypoint"),
            cmd=_str_list(conf.get("Cmd"), "Cmd"),
            env=env,
            working_dir=str(conf.get("WorkingDir") or "/"),
            user=str(conf.get("User") or ""),
            exposed_ports=tuple(sorted(ports)),
            os=str(doc.get("os") or PLATFORM_OS),
            architecture=str(doc.get("architecture") or PLATFORM_ARCH),
            diff_ids=tuple(diff_ids or ()),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        )
