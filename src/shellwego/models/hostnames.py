"""Which hostnames are local: the one definition the domain API and the edge share."""

from __future__ import annotations

import ipaddress

# names no public CA will certify (RFC 6761, RFC 8375, and common private suffixes)
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".test", ".lan", ".home.arpa")


def is_local_name(hostname: str) -> bool:
    """True for names served with the edge's internal CA instead of ACME: the suffixes
    above, single-label names and IP addresses."""
    name = hostname.lower().rstrip(".")
    if name == "localhost" or name.endswith(LOCAL_SUFFIXES) or "." not in name:
        return True
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True
