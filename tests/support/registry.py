"""A real OCI registry for tests (Debian's ``docker-registry``), a token server for its
bearer auth, and builders of tiny images pushed with the distribution API."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from shellwego.images.manifest import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST
from shellwego.images.reference import ImageReference
from shellwego.images.registry import RegistryClient
from support.net import free_port

REGISTRY_BIN = "/usr/bin/docker-registry"


@dataclass(frozen=True)
class Entry:
    """One tar entry of a test layer."""

    name: str
    kind: str = "file"  # file | dir | symlink | hardlink | chr | blk | fifo
    data: bytes = b""
    mode: int = 0o644
    target: str = ""


def layer_tar(entries: Sequence[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode = e.mode
            info.mtime = 1_700_000_000
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
                "blk": tarfile.BLKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[e.kind]
            info.linkname = e.target
            if e.kind in ("chr", "blk"):
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
    return out.getvalue()


@dataclass(frozen=True)
class Layer:
    blob: bytes  # gzipped tar
    diff_id: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.blob).hexdigest()


def make_layer(entries: Sequence[Entry]) -> Layer:
    raw = layer_tar(entries)
    return Layer(
        blob=gzip.compress(raw, mtime=0), diff_id="sha256:" + hashlib.sha256(raw).hexdigest()
    )


def image_config(layers: Sequence[Layer], arch: str = "amd64", **config: Any) -> bytes:
    doc = {
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    return json.dumps(doc).encode()


async def push_image(
    client: RegistryClient,
    ref: ImageReference,
    layers: Sequence[Layer],
    arch: str = "amd64",
    **config: Any,
) -> str:
    """Push an image of ``layers``; its manifest digest."""
    config_blob = image_config(layers, arch, **config)
    cfg = await client.push_blob(ref, config_blob)
    for layer in layers:
        await client.push_blob(ref, layer.blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg.digest, "size": cfg.size},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": len(layer.blob)}
            for layer in layers
        ],
    }
    return await client.put_manifest(ref, json.dumps(manifest).encode(), OCI_MANIFEST)


async def push_index(
    client: RegistryClient, ref: ImageReference, entries: Sequence[tuple[str, str, int]]
) -> str:
    """Push an OCI index of (digest, arch, size) manifests; its digest."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": size,
                "platform": {"os": "linux", "architecture": arch},
            }
            for digest, arch, size in entries
        ],
    }
    return await client.put_manifest(ref, json.dumps(index).encode(), OCI_INDEX)


@dataclass
class Registry:
    host: str  # host:port
    storage: Path
    process: subprocess.Popen[bytes]

    def blob_data(self, digest: str) -> Path:
        hexd = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


@contextmanager
def run_registry(workdir: Path, addr: str = "127.0.0.1", auth: str = "") -> Iterator[Registry]:
    """``docker-registry serve`` on ``addr`` and a free port, storing in ``workdir``;
    ``auth``: a YAML ``auth:`` section (indented by two spaces) or empty."""
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {storage}\n"
        "  cache:\n    blobdescriptor: inmemory\n"
        "http:\n"
        f"  addr: {addr}:{port}\n"
        f"  secret: {uuid.uuid4().hex}\n" + (f"auth:\n{auth}" if auth else "")
    )
    log = (workdir / "registry.log").open("wb")
    process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log)
    host = f"{addr}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    "docker-registry exited: " + (workdir / "registry.log").read_text()[-2000:]
                )
            try:
                httpx.get(f"http://{host}/v2/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not start") from None
                time.sleep(0.05)
        yield Registry(host=host, storage=storage, process=process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def htpasswd_line(user: str, password: str) -> str:
    htpasswd = shutil.which("htpasswd")
    if htpasswd is None:
        raise RuntimeError("htpasswd (apache2-utils) is needed for the basic-auth tests")
    out = subprocess.run(
        [htpasswd, "-Bbn", user, password], check=True, capture_output=True, text=True
    )
    return out.stdout.strip() + "\n"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _libtrust_key_id(public_der: bytes) -> str:
    digest = hashlib.sha256(public_der).digest()[:30]
    encoded = base64.b32encode(digest).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenServer:
    """The realm of a registry's bearer auth: answers ``GET /token?service&scope`` with a
    JWT granting the scope's actions, to one user (basic auth) or to anyone."""

    def __init__(self, workdir: Path, user: str | None, password: str | None) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token issuer")])
        now = time.time()
        import datetime as dt

        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.fromtimestamp(now - 3600, dt.UTC))
            .not_valid_after(dt.datetime.fromtimestamp(now + 86400, dt.UTC))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = workdir / "token-cert.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = _libtrust_key_id(der)
        self.user, self.password = user, password
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                auth = self.headers.get("Authorization", "")
                server.requests.append({"query": query, "authorized": bool(auth)})
                if server.user is not None:
                    expected = (
                        "Basic "
                        + base64.b64encode(f"{server.user}:{server.password}".encode()).decode()
                    )
                    if auth != expected:
                        self.send_response(401)
                        self.end_headers()
                        return
                token = server.token(query.get("service", [""])[0], query.get("scope", []))
                body = json.dumps({"token": token}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def token(self, service: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": "test-issuer",
            "sub": self.user or "",
            "aud": service,
            "exp": now + 600,
            "nbf": now - 60,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def auth_section(self) -> str:
        return (
            "  token:\n"
            f"    realm: {self.realm}\n"
            "    service: test-registry\n"
            "    issuer: test-issuer\n"
            f"    rootcertbundle: {self.cert_path}\n"
        )

    def __enter__(self) -> TokenServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
