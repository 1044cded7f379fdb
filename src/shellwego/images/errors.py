"""Errors of image pulls and unpacking, in the one error tree of :mod:`shellwego.errors`.

Messages name the image reference, the registry and the digest at fault, never a
credential."""

from __future__ import annotations

from shellwego.errors import Forbidden, InvalidInput, NotFound, ShellWeGoError, Unavailable


class InvalidReference(InvalidInput):
    """An image reference that does not parse (``name[:tag][@digest]``)."""

    slug = "invalid-image-reference"
    title = "Invalid image reference"


class InsecureRegistry(InvalidInput):
    """Plain HTTP to a registry that is neither on a loopback address nor listed as an
    insecure registry."""

    slug = "insecure-registry"
    title = "Insecure registry"


class ImageNotFound(NotFound):
    """The repository, tag, manifest or blob is not in the registry."""

    slug = "image-not-found"
    title = "Image not found"


class RegistryAuthFailed(Forbidden):
    """The registry refused the credentials given (or wants some and none were given)."""

    slug = "registry-auth-failed"
    title = "Registry authentication failed"


class RegistryUnavailable(Unavailable):
    """The registry (or its token server) is down, unreachable or answers with errors."""

    slug = "registry-unavailable"
    title = "Registry unavailable"


class DigestMismatch(ShellWeGoError):
    """Content from the registry does not hash to the digest it was asked for: nothing
    of it is kept."""

    status = 502
    slug = "digest-mismatch"
    title = "Digest mismatch"


class UnsupportedImage(InvalidInput):
    """A manifest or layer this platform cannot run: another architecture or OS only, an
    unknown media type or compression, a malformed manifest or config."""

    slug = "unsupported-image"
    title = "Unsupported image"


class UnsafeLayer(InvalidInput):
    """A layer that tries to write outside its root filesystem (``..``, absolute paths,
    writes through symlinks, hard links to outside files): refused, nothing kept."""

    slug = "unsafe-layer"
    title = "Unsafe image layer"
