"""What one pass of the rollout controller knows of the cluster, and the placements it
need not ask for again."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from shellwego.errors import CapacityError
from shellwego.models import DesiredState, Instance, Node, NodeStatus
from shellwego.services import placement
from shellwego.services.context import Context
from shellwego.store import repository as repo

# a formation that did not fit is placed again once anything placement reads has changed,
# and this often all the same
RETRY_UNCHANGED_SECONDS = 30.0


@dataclass
class Cluster:
    """The nodes as one pass read them, shared by every app of the pass."""

    nodes: dict[str, Node]
    down: frozenset[str]
    _fingerprint: int | None = None

    @classmethod
    def read(cls, s: Session) -> Cluster:
        nodes = {n.id: n for n in repo.find_all(s, Node)}
        down = frozenset(n.id for n in nodes.values() if n.status == NodeStatus.DOWN)
        return cls(nodes=nodes, down=down)

    def fingerprint(self, s: Session) -> int:
        """Changes whenever anything placement reads may have: a node's status, capacity,
        runtimes or labels, a node added or removed, an instance placed or stopped (each
        bumps its node's assignment index), a port let go (one fewer stopped instance not
        yet seen gone)."""
        if self._fingerprint is None:
            held = repo.count(
                s,
                Instance,
                Instance.state.not_in(placement.RELEASED_STATES),  # type: ignore[attr-defined]
                desired_state=DesiredState.STOPPED.value,
            )
            self._fingerprint = hash(
                (
                    held,
                    *(
                        (
                            n.id,
                            str(n.status),
                            n.capacity.cpu_millis,
                            n.capacity.memory_bytes,
                            tuple(n.runtimes),
                            tuple(sorted(n.labels.items())),
                            n.assignment_index,
                        )
                        for n in self.nodes.values()
                    ),
                )
            )
        return self._fingerprint


@dataclass(frozen=True, slots=True)
class _Shortfall:
    asked: tuple[object, ...]
    fingerprint: int
    at: datetime
    error: str


@dataclass
class Shortfalls:
    """Formations that did not fit, and the cluster they did not fit on: asking for the
    same on the same cluster would fail the same way, so it is not asked again (that
    would lock every node row for nothing) until something changed, or
    RETRY_UNCHANGED_SECONDS passed. Kept per control-plane process."""

    failed: dict[tuple[str, str], _Shortfall] = field(default_factory=dict)

    def known(
        self, key: tuple[str, str], asked: tuple[object, ...], fingerprint: int, now: datetime
    ) -> str | None:
        """The error of the same request on the same cluster, if still fresh."""
        last = self.failed.get(key)
        if last is None or last.asked != asked or last.fingerprint != fingerprint:
            return None
        if (now - last.at).total_seconds() >= RETRY_UNCHANGED_SECONDS:
            return None
        return last.error

    def retain(self, app_ids: set[str]) -> None:
        """Forget the apps not in ``app_ids`` (deleted ones)."""
        for key in [k for k in self.failed if k[0] not in app_ids]:
            del self.failed[key]

    def record(
        self,
        key: tuple[str, str],
        asked: tuple[object, ...],
        fingerprint: int,
        now: datetime,
        error: CapacityError | None,
    ) -> None:
        if error is None:
            self.failed.pop(key, None)
        else:
            self.failed[key] = _Shortfall(asked, fingerprint, now, str(error))


def shortfalls(ctx: Context) -> Shortfalls:
    """This control-plane process's :class:`Shortfalls`."""
    found = ctx.rollout_shortfalls
    if found is None:
        found = ctx.rollout_shortfalls = Shortfalls()
    return found
