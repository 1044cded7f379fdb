"""Certificate state from Caddy's storage, for the domain API."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from shellwego.models.values import Certificate


def certificate_for(storage: Path, hostname: str) -> Certificate | None:
    """The certificate Caddy holds for ``hostname`` (any issuer), or None."""
    name = hostname.lower()
    for crt in sorted((storage / "certificates").glob(f"*/{name}/{name}.crt")):
        try:
            cert = x509.load_pem_x509_certificate(crt.read_bytes())
        except (OSError, ValueError):
            continue
        issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
        issuer_dir = crt.parent.parent.name
        return Certificate(
            issuer=str(issuer[0].value) if issuer else issuer_dir,
            not_after=cert.not_valid_after_utc.isoformat(),
            managed_by="internal" if issuer_dir == "local" else "acme",
        )
    return None
