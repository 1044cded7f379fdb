"""DNS lookups for domain verification, using the system's resolver tool."""

from __future__ import annotations

import shutil
import subprocess

from shellwego.errors import Unavailable


def system_resolver(kind: str, name: str) -> list[str]:
    """TXT strings or CNAME targets of ``name`` via ``dig`` (dnsutils) when installed."""
    dig = shutil.which("dig")
    if dig is None:
        raise Unavailable("domain verification needs the `dig` tool (apt-get install dnsutils)")
    try:
        out = subprocess.run(
            [dig, "+short", "+time=3", "+tries=1", kind, name],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"DNS lookup of {name} timed out") from exc
    return [line.strip().strip('"') for line in out.splitlines() if line.strip()]
