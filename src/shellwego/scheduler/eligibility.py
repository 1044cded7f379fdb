"""Which nodes may run an instance: ready, offering its runtime, carrying its labels."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol


class NodeFacts(Protocol):
    """What eligibility reads of a node (a snapshot or a stored node)."""

    @property
    def status(self) -> str: ...

    @property
    def runtimes(self) -> Collection[str]: ...

    @property
    def labels(self) -> Mapping[str, str]: ...


def eligible(node: NodeFacts, runtime: str, constraints: Mapping[str, str]) -> bool:
    """Whether ``node`` may run instances of ``runtime`` under the label ``constraints``."""
    return (
        node.status == "ready"
        and runtime in node.runtimes
        and all(node.labels.get(label) == value for label, value in constraints.items())
    )
