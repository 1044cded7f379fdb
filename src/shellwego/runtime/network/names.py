"""Names of everything a node network makes on the host, derived from its state directory.

Two platforms on one host (each with its own state directory) never pick the same names:
each name carries a short hash of the state directory's path. Interface names stay within
IFNAMSIZ (15 characters). The bridge's alias records the full hash, so a bridge of another
state directory that happens to share the short hash is recognised, never taken over.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from shellwego.errors import InvalidInput

NETNS_DIR = Path("/run/netns")  # where `ip netns` keeps its names (fixed in iproute2)
BRIDGE_PREFIX = "swgbr"  # every ShellWeGo bridge's name starts so (firewall wildcard)
IFNAMSIZ = 15
_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_instance_id(instance_id: str) -> str:
    if not _INSTANCE_ID.fullmatch(instance_id):
        raise InvalidInput(
            f"invalid instance id {instance_id!r} for a network namespace "
            f"(letters, digits, '_', '.', '-'; at most 100)"
        )
    return instance_id


@dataclass(frozen=True, slots=True)
class NetNames:
    """``tag``: 6 hex digits of the state directory's hash; ``owner``: all of them."""

    tag: str
    owner: str

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> NetNames:
        digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()
        return cls(digest[:6], digest)

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.tag}"

    @property
    def table(self) -> str:
        """The nftables table (family ``inet``) holding this network's rules."""
        return f"shellwego_{self.tag}"

    @property
    def alias(self) -> str:
        """The bridge's alias: who owns it."""
        return f"shellwego:{self.owner}"

    @property
    def netns_prefix(self) -> str:
        return f"swg-{self.tag}-"

    def netns(self, instance_id: str) -> str:
        return self.netns_prefix + check_instance_id(instance_id)

    def netns_path(self, instance_id: str) -> Path:
        return NETNS_DIR / self.netns(instance_id)

    def veth(self, index: int) -> str:
        """The host end of the veth pair of the address with host number ``index``."""
        name = f"swgv{self.tag}i{index:x}"
        assert len(name) <= IFNAMSIZ, name
        return name
