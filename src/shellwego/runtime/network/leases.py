"""What a node network keeps in its state directory (``network.json``): its subnet and
which instance holds which address, so a restarted agent finds both again.

Every change is a read-modify-write of the whole file under an ``flock`` on
``network.lock``, replaced atomically: several ``NodeNetwork`` objects (or processes) over
one state directory never hand out one address twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from shellwego.errors import RuntimeFailure

STATE_FILE = "network.json"
LOCK_FILE = "network.lock"
FIRST_HOST = 2  # .1 is the gateway


@dataclass(slots=True)
class NetState:
    subnet: IPv4Network | None = None
    leases: dict[str, int] = field(default_factory=dict)  # instance id → host number
    ip_forward_was: str | None = None  # what net.ipv4.ip_forward was before we set it

    def address(self, index: int) -> IPv4Address:
        assert self.subnet is not None
        return self.subnet.network_address + index

    def allocate(self, instance_id: str, busy: Callable[[int], bool]) -> int:
        """The instance's host number: its lease, or the lowest one neither leased nor
        ``busy`` (its interface still being removed)."""
        if instance_id in self.leases:
            return self.leases[instance_id]
        assert self.subnet is not None
        used = set(self.leases.values())
        for index in range(FIRST_HOST, self.subnet.num_addresses - 1):
            if index not in used and not busy(index):
                self.leases[instance_id] = index
                return index
        raise RuntimeFailure(
            f"the node network {self.subnet} has no free address left "
            f"({len(used)} instances hold one)"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "version": 1,
            "subnet": str(self.subnet) if self.subnet else None,
            "leases": dict(sorted(self.leases.items())),
            "ip_forward_was": self.ip_forward_was,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> NetState:
        subnet = data.get("subnet")
        leases = data.get("leases") or {}
        assert isinstance(leases, dict)
        was = data.get("ip_forward_was")
        return cls(
            IPv4Network(subnet) if isinstance(subnet, str) else None,
            {str(k): int(v) for k, v in leases.items()},
            was if isinstance(was, str) else None,
        )


class StateFile:
    """``network.json`` in ``state_dir``, read and written under its lock."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.lock_path = state_dir / LOCK_FILE

    def read(self) -> NetState:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return NetState()
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"cannot read the node network state {self.path}: {exc}") from exc
        try:
            return NetState.from_json(data)
        except (AssertionError, TypeError, ValueError) as exc:
            raise RuntimeFailure(f"the node network state {self.path} is damaged: {exc}") from exc

    def write(self, state: NetState) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state.to_json(), fh, indent=1)
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def change(self) -> Iterator[NetState]:
        """The state, locked; written back when the block ends without an error."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = self.read()
            yield state
            self.write(state)
        finally:
            os.close(fd)

    def remove(self) -> None:
        for path in (self.path, self.lock_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
