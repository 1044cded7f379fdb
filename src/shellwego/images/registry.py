"""A client of the OCI distribution API (``/v2/``): resolve tags, fetch manifests and
blobs, push blobs and manifests.

* every blob and every manifest fetched by digest is hashed while it streams and refused
  (nothing kept) when it does not match;
* anonymous, basic and bearer-token auth: a ``401`` with ``WWW-Authenticate: Basic`` is
  answered with the registry's credentials, one with ``Bearer realm=…,service=…,scope=…``
  by asking the realm for a token (with the credentials, if any) and retrying;
* HTTPS always, except for registries on a loopback address (127.0.0.0/8, ::1,
  ``localhost``) and those listed in ``insecure_registries``, which may answer over
  plain HTTP (HTTPS is tried first, as Docker does). A token realm obeys the same rule, so
  credentials never cross a network in clear.

Credentials are never logged nor put into errors.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import os
import re
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from shellwego.images.errors import (
    DigestMismatch,
    ImageNotFound,
    InsecureRegistry,
    RegistryAuthFailed,
    RegistryUnavailable,
    UnsupportedImage,
)
from shellwego.images.manifest import (
    ACCEPT_MANIFESTS,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    ImageConfig,
    Manifest,
    media_type_of,
    select_platform,
)
from shellwego.images.reference import ImageReference

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    """A registry login. ``repr`` never shows the password."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class RegistryOptions:
    # registries (host or host:port) that may be reached over plain HTTP although they are
    # not on a loopback address
    insecure_registries: frozenset[str] = frozenset()
    timeout: float = 30.0
    max_blob_bytes: int = 8 * 1024**3  # a layer declaring more is refused before its fetch


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hostname(host: str) -> str:
    """``host[:port]`` or ``[v6]:port`` without its port or brackets."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") > 1:  # a bare IPv6 address
        return host
    return host.rsplit(":", 1)[0] if ":" in host else host


def is_loopback(host: str) -> bool:
    name = _hostname(host).lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def plain_http_allowed(host: str, options: RegistryOptions) -> bool:
    """Whether ``host`` (``host[:port]``) may be spoken to over plain HTTP."""
    listed = {h.strip().lower() for h in options.insecure_registries}
    return is_loopback(host) or host.lower() in listed or _hostname(host).lower() in listed


def _tls_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if (
            isinstance(seen, ssl.SSLError)
            or "SSL" in type(seen).__name__
            or "ssl" in str(seen).lower()
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate: Bearer realm="…",service="…"`` → ("bearer", {realm, service})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(rest)
    }
    return scheme.lower(), params


@dataclass(frozen=True)
class ManifestDocument:
    data: bytes
    media_type: str
    digest: str


@dataclass(frozen=True)
class ResolvedImage:
    """An image reference resolved against its registry: pinned to the digest of what the
    tag points at (an index or a manifest), with the linux/amd64 manifest and config."""

    reference: ImageReference  # pinned: .digest is set
    manifest_digest: str  # of the linux/amd64 manifest (== reference.digest without an index)
    manifest: Manifest
    config_data: bytes
    config: ImageConfig
    documents: tuple[ManifestDocument, ...]  # the index (if any) and the manifest, verified

    @property
    def digest(self) -> str:
        assert self.reference.digest is not None
        return self.reference.digest


def platform_manifest(top: ManifestDocument, document: ManifestDocument) -> Manifest:
    """The image manifest ``document`` (``top`` itself, or the entry of index ``top``)."""
    if document is not top and document.media_type in INDEX_TYPES:
        raise UnsupportedImage(f"index {top.digest} points at another index")
    if document.media_type not in MANIFEST_TYPES:
        raise UnsupportedImage(
            f"manifest media type {document.media_type[:100]!r} is not supported"
        )
    return Manifest.parse(document.data, document.media_type)


def resolved_image(
    ref: ImageReference,
    top: ManifestDocument,
    document: ManifestDocument,
    manifest: Manifest,
    config_data: bytes,
) -> ResolvedImage:
    """Check that the image runs here (linux/amd64, one diff_id per layer) and say so."""
    config = ImageConfig.parse(config_data)
    if (config.os, config.architecture) != ("linux", "amd64"):
        raise UnsupportedImage(
            f"image {ref} is for {config.os}/{config.architecture}, not linux/amd64"
        )
    if config.diff_ids and len(config.diff_ids) != len(manifest.layers):
        raise UnsupportedImage(
            f"image {ref}: its config lists {len(config.diff_ids)} layers, "
            f"its manifest {len(manifest.layers)}"
        )
    return ResolvedImage(
        reference=ref.pinned(top.digest),
        manifest_digest=document.digest,
        manifest=manifest,
        config_data=config_data,
        config=config,
        documents=(top,) if document is top else (top, document),
    )


class RegistryClient:
    """One client for any number of registries; ``credentials`` by registry host
    (``ghcr.io``, ``127.0.0.1:5000``; Docker Hub is ``registry-1.docker.io``)."""

    def __init__(
        self,
        credentials: Mapping[str, Credentials] | None = None,
        options: RegistryOptions | None = None,
    ) -> None:
        self._credentials = dict(credentials or {})
        self._options = options or RegistryOptions()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self._options.timeout, connect=min(10.0, self._options.timeout)),
            follow_redirects=True,  # httpx drops Authorization on a redirect to another origin
            headers={"User-Agent": "shellwego"},
        )
        self._base: dict[str, str] = {}  # registry -> "https://host" or "http://host"
        self._tokens: dict[tuple[str, str], str] = {}  # (registry, scope) -> bearer token
        self._basic: set[str] = set()  # registries known to want basic auth

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- transport -------------------------------------------------------------------

    async def _base_url(self, registry: str) -> str:
        known = self._base.get(registry)
        if known:
            return known
        https = f"https://{registry}"
        try:
            await self._http.get(f"{https}/v2/")
        except httpx.TransportError as exc:
            if not plain_http_allowed(registry, self._options):
                if _tls_error(exc):
                    raise InsecureRegistry(
                        f"registry {registry} does not speak HTTPS; plain HTTP is only used for "
                        "registries on a loopback address or listed as insecure registries"
                    ) from None
                raise RegistryUnavailable(
                    f"registry {registry} is unreachable: {type(exc).__name__}"
                ) from None
            self._base[registry] = f"http://{registry}"
            return self._base[registry]
        self._base[registry] = https
        return https

    def _auth_header(self, registry: str, scope: str) -> dict[str, str]:
        token = self._tokens.get((registry, scope))
        if token:
            return {"Authorization": f"Bearer {token}"}
        creds = self._credentials.get(registry)
        if registry in self._basic and creds:
            return {"Authorization": _basic(creds)}
        return {}

    async def _authenticate(
        self, registry: str, scope: str, challenge_header: str, repo: str, retried: bool
    ) -> None:
        """Answer a ``401``'s challenge; ``retried``: the request already carried
        authentication obtained by this very request (so it is refused, not stale)."""
        scheme, params = parse_challenge(challenge_header)
        creds = self._credentials.get(registry)
        if scheme == "basic":
            if creds is None or (retried and registry in self._basic):
                raise self._auth_failed(registry, repo, creds)
            self._basic.add(registry)
            return
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryAuthFailed(
                f"registry {registry} asks for an unsupported authentication ({scheme[:20]})"
            )
        if self._tokens.pop((registry, scope), None) is not None and retried:
            raise self._auth_failed(registry, repo, creds)  # a fresh token was refused
        realm = params["realm"]
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryAuthFailed(f"registry {registry} names an invalid token realm")
        if parts.scheme == "http" and not plain_http_allowed(parts.netloc, self._options):
            raise InsecureRegistry(
                f"registry {registry} sends its token requests to plain HTTP at {parts.netloc}; "
                "only loopback addresses and insecure registries may use plain HTTP"
            )
        query: list[tuple[str, str | int | float | bool | None]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query.append(("scope", scope))
        headers = {"Authorization": _basic(creds)} if creds else {}
        try:
            answer = await self._http.get(realm, params=query, headers=headers)
        except httpx.TransportError as exc:
            raise RegistryUnavailable(
                f"token server of registry {registry} is unreachable: {type(exc).__name__}"
            ) from None
        if answer.status_code in (401, 403):
            raise self._auth_failed(registry, repo, creds)
        if answer.status_code != 200:
            raise RegistryUnavailable(
                f"token server of registry {registry} answered {answer.status_code}"
            )
        try:
            body = answer.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryUnavailable(
                f"token server of registry {registry} answered without a token"
            )
        self._tokens[(registry, scope)] = token

    @staticmethod
    def _auth_failed(registry: str, repo: str, creds: Credentials | None) -> RegistryAuthFailed:
        if creds is None:
            return RegistryAuthFailed(
                f"registry {registry} wants credentials for {repo}, and none are set"
            )
        return RegistryAuthFailed(f"registry {registry} refused the credentials given for {repo}")

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        ref: ImageReference,
        path: str,
        *,
        push: bool = False,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        url: str | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """A streamed request to ``ref``'s registry, authenticated as it asks."""
        registry = ref.registry
        base = await self._base_url(registry)
        scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        target = url or f"{base}/v2/{ref.repository}/{path}"
        retried = False
        for _attempt in range(3):
            all_headers = {**(headers or {}), **self._auth_header(registry, scope)}
            try:
                request = self._http.build_request(
                    method, target, headers=all_headers, content=content, params=params
                )
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise RegistryUnavailable(
                    f"registry {registry} is unreachable: {type(exc).__name__}"
                ) from None
            if response.status_code == 401 and response.headers.get("www-authenticate"):
                challenge = response.headers["www-authenticate"]
                await response.aclose()
                await self._authenticate(registry, scope, challenge, ref.repository, retried)
                retried = True
                continue
            final = response.url
            if final.scheme != "https" and not plain_http_allowed(
                final.netloc.decode("ascii", "replace"), self._options
            ):
                await response.aclose()
                raise InsecureRegistry(
                    f"registry {registry} redirected to plain HTTP at {final.host}; only loopback "
                    "addresses and insecure registries may use plain HTTP"
                )
            try:
                yield response
            finally:
                await response.aclose()
            return
        raise RegistryAuthFailed(f"registry {registry} keeps refusing access to {ref.repository}")

    @staticmethod
    async def _check(response: httpx.Response, ref: ImageReference, what: str) -> None:
        status = response.status_code
        if status < 300:
            return
        if status == 404:
            raise ImageNotFound(f"{what} not found in {ref.registry}/{ref.repository}")
        if status in (401, 403):
            raise RegistryAuthFailed(
                f"registry {ref.registry} denies access to {ref.repository} ({status})"
            )
        if status == 429 or status >= 500:
            raise RegistryUnavailable(f"registry {ref.registry} answered {status} for {what}")
        detail = ""
        try:
            await response.aread()
            errors = response.json().get("errors") or []
            detail = "; ".join(str(e.get("code", "")) for e in errors if isinstance(e, dict))[:200]
        except (ValueError, AttributeError, httpx.HTTPError):
            pass
        raise UnsupportedImage(
            f"registry {ref.registry} answered {status} for {what}"
            + (f": {detail}" if detail else "")
        )

    @staticmethod
    async def _read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > limit:
                raise UnsupportedImage(f"{what} is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- pull --------------------------------------------------------------------------

    async def resolve(self, ref: ImageReference) -> str:
        """The digest ``ref``'s tag points at (a HEAD request; a GET when the registry
        does not send ``Docker-Content-Digest``)."""
        if ref.digest:
            return ref.digest
        async with self._request(
            "HEAD", ref, f"manifests/{ref.reference}", headers={"Accept": ACCEPT_MANIFESTS}
        ) as response:
            await self._check(response, ref, f"tag {ref.reference}")
            digest = response.headers.get("docker-content-digest", "")
        if re.fullmatch(r"sha256:[a-f0-9]{64}", digest):
            return digest
        return (await self.get_manifest(ref)).digest

    async def get_manifest(
        self, ref: ImageReference, digest: str | None = None
    ) -> ManifestDocument:
        """The manifest (or index) at ``digest``, ``ref``'s digest or ``ref``'s tag;
        verified against the digest it was asked by."""
        wanted = digest or ref.digest
        reference = wanted or ref.reference
        async with self._request(
            "GET", ref, f"manifests/{reference}", headers={"Accept": ACCEPT_MANIFESTS}
        ) as response:
            await self._check(response, ref, f"manifest {reference}")
            data = await self._read_capped(response, MAX_MANIFEST_BYTES, f"manifest {reference}")
            content_type = response.headers.get("content-type")
            header_digest = response.headers.get("docker-content-digest")
        actual = sha256_digest(data)
        expected = wanted or (
            header_digest if header_digest and header_digest.startswith("sha256:") else None
        )
        if expected and actual != expected:
            raise DigestMismatch(
                f"manifest {reference} of {ref.registry}/{ref.repository} hashes to {actual}, "
                f"not {expected}"
            )
        return ManifestDocument(
            data=data, media_type=media_type_of(data, content_type), digest=actual
        )

    async def fetch_image(self, ref: ImageReference) -> ResolvedImage:
        """Resolve ``ref`` to a digest, descend an index to its linux/amd64 manifest and
        fetch the image config (verified)."""
        top = await self.get_manifest(ref)
        document = top
        if top.media_type in INDEX_TYPES:
            document = await self.get_manifest(ref, select_platform(top.data).digest)
        manifest = platform_manifest(top, document)
        config_data = await self.fetch_blob_bytes(ref, manifest.config, MAX_CONFIG_BYTES)
        return resolved_image(ref, top, document, manifest, config_data)

    async def fetch_blob_bytes(self, ref: ImageReference, blob: Descriptor, limit: int) -> bytes:
        if blob.size > limit:
            raise UnsupportedImage(f"blob {blob.digest} is larger than {limit} bytes")
        async with self._request("GET", ref, f"blobs/{blob.digest}") as response:
            await self._check(response, ref, f"blob {blob.digest}")
            data = await self._read_capped(response, limit, f"blob {blob.digest}")
        actual = sha256_digest(data)
        if actual != blob.digest:
            raise DigestMismatch(
                f"blob {blob.digest} of {ref.registry}/{ref.repository} hashes to {actual}"
            )
        return data

    async def fetch_blob(self, ref: ImageReference, blob: Descriptor, dest: Path) -> None:
        """Stream blob ``blob`` into ``dest``, hashing as it comes; ``dest`` appears
        (atomically) only when the content matches the digest and the size."""
        if blob.size > self._options.max_blob_bytes:
            raise UnsupportedImage(
                f"layer {blob.digest} is {blob.size} bytes, more than the "
                f"{self._options.max_blob_bytes} allowed"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            hasher = hashlib.sha256()
            total = 0
            with os.fdopen(fd, "wb") as out:
                async with self._request("GET", ref, f"blobs/{blob.digest}") as response:
                    await self._check(response, ref, f"blob {blob.digest}")
                    async for chunk in response.aiter_bytes(_CHUNK):
                        total += len(chunk)
                        if total > blob.size:
                            raise DigestMismatch(
                                f"blob {blob.digest} of {ref.registry}/{ref.repository} is larger "
                                f"than its {blob.size} bytes"
                            )
                        hasher.update(chunk)
                        out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = "sha256:" + hasher.hexdigest()
            if actual != blob.digest or total != blob.size:
                raise DigestMismatch(
                    f"blob {blob.digest} of {ref.registry}/{ref.repository} hashes to {actual} "
                    f"({total} bytes); nothing of it was kept"
                )
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    # -- push (the platform's own builds; tests) ---------------------------------------

    async def blob_exists(self, ref: ImageReference, digest: str) -> bool:
        async with self._request("HEAD", ref, f"blobs/{digest}", push=True) as response:
            if response.status_code == 404:
                return False
            await self._check(response, ref, f"blob {digest}")
            return True

    async def push_blob(self, ref: ImageReference, data: bytes) -> Descriptor:
        """Upload ``data`` as a blob of ``ref``'s repository (monolithic POST + PUT)."""
        digest = sha256_digest(data)
        if await self.blob_exists(ref, digest):
            return Descriptor(media_type="", digest=digest, size=len(data))
        async with self._request("POST", ref, "blobs/uploads/", push=True) as response:
            await self._check(response, ref, "blob upload")
            location = response.headers.get("location", "")
            base = str(response.url)
        if not location:
            raise RegistryUnavailable(
                f"registry {ref.registry} started an upload without a Location"
            )
        upload = httpx.URL(base).join(location)
        params = dict(upload.params)
        params["digest"] = digest
        async with self._request(
            "PUT",
            ref,
            "",
            push=True,
            url=str(upload.copy_with(query=None)),
            params=params,
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        ) as response:
            await self._check(response, ref, f"blob {digest}")
        return Descriptor(media_type="", digest=digest, size=len(data))

    async def put_manifest(self, ref: ImageReference, data: bytes, media_type: str) -> str:
        """Store manifest ``data`` under ``ref``'s tag (or its digest); its digest."""
        digest = sha256_digest(data)
        reference = ref.tag or digest
        async with self._request(
            "PUT",
            ref,
            f"manifests/{reference}",
            push=True,
            content=data,
            headers={"Content-Type": media_type},
        ) as response:
            await self._check(response, ref, f"manifest {reference}")
        return digest


def _basic(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()
