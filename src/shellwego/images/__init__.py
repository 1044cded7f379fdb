"""Container images: references, the OCI distribution API, a content-addressed store and a
safe layer unpacker. See README.md in this directory."""

from shellwego.images.manifest import ImageConfig
from shellwego.images.reference import ImageReference, parse_reference
from shellwego.images.registry import Credentials, RegistryClient, RegistryOptions, ResolvedImage
from shellwego.images.store import ImageStore, PulledImage

__all__ = [
    "Credentials",
    "ImageConfig",
    "ImageReference",
    "ImageStore",
    "PulledImage",
    "RegistryClient",
    "RegistryOptions",
    "ResolvedImage",
    "parse_reference",
]
