"""Image references: ``[registry[:port]/]repository[:tag][@digest]``.

Resolution follows Docker: a first component that has a ``.`` or ``:`` or is
``localhost`` is a registry host, anything else is a repository on Docker Hub
(``registry-1.docker.io``), where one-component names live under ``library/``; no tag
and no digest means ``latest``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shellwego.images.errors import InvalidReference

DOCKER_HUB = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)


def is_digest(value: str) -> bool:
    return _DIGEST.fullmatch(value) is not None


@dataclass(frozen=True)
class ImageReference:
    registry: str  # host[:port], e.g. registry-1.docker.io or 127.0.0.1:5000
    repository: str  # e.g. library/python
    tag: str | None = None
    digest: str | None = None  # sha256:<hex>

    @property
    def reference(self) -> str:
        """What goes into ``/v2/<repository>/manifests/<reference>``: the digest when
        pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> ImageReference:
        """The same image pinned to ``digest`` (the tag kept for reading)."""
        return ImageReference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_reference(text: str) -> ImageReference:
    """Parse ``text`` (``python:3.12``, ``ghcr.io/org/app@sha256:…``,
    ``127.0.0.1:5000/app:v1``) into an :class:`ImageReference`."""
    raw = text.strip()
    shown = raw[:200]
    if not raw or len(raw) > 512 or any(c.isspace() for c in raw):
        raise InvalidReference(f"invalid image reference {shown!r}")
    rest, digest = raw, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not is_digest(digest):
            raise InvalidReference(
                f"invalid digest in image reference {shown!r} (want sha256:<64 hex>)"
            )
    registry = DOCKER_HUB
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not _HOST.fullmatch(first):
            raise InvalidReference(f"invalid registry host in image reference {shown!r}")
        registry = DOCKER_HUB if first in _HUB_ALIASES else first
        rest = remainder
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(f"invalid tag in image reference {shown!r}")
    components = rest.split("/")
    if not rest or not all(_COMPONENT.fullmatch(c) for c in components):
        raise InvalidReference(
            f"invalid repository name in image reference {shown!r} "
            "(lowercase letters, digits and . _ - separated by /)"
        )
    if registry == DOCKER_HUB and len(components) == 1:
        rest = f"library/{rest}"
    if len(rest) > 255:
        raise InvalidReference(f"repository name too long in image reference {shown!r}")
    if tag is None and digest is None:
        tag = "latest"
    return ImageReference(registry=registry, repository=rest, tag=tag, digest=digest)
