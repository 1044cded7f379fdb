"""Which runtimes a node offers, and why it does not offer each of the others.

A runtime is offered when the agent runs a driver for it that works on this host. For the
others the reason is what an operator can act on: the host check's finding when the host
lacks what the runtime needs (``/dev/kvm`` is missing, no crun or runc), else that this
agent runs no driver for it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from shellwego.models.agentprotocol import RUNTIMES

from . import microvm
from .driver import Capabilities, Driver

OCI_RUNTIMES = ("crun", "runc")


@dataclass(frozen=True, slots=True)
class Offer:
    runtimes: list[str]
    reasons: dict[str, str] = field(default_factory=dict)  # runtime → why not offered


def oci_problem(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """Why this host cannot run OCI containers, or None when it has a runtime for them."""
    if any(which(name) for name in OCI_RUNTIMES):
        return None
    return "no crun or runc found on PATH"


def _host_problem(
    runtime: str,
    which: Callable[[str], str | None],
    microvm_probe: Callable[[], Capabilities],
) -> str | None:
    if runtime == "oci":
        return oci_problem(which)
    if runtime == "microvm":
        caps = microvm_probe()
        return None if caps.available else "; ".join(caps.notes) or "KVM is not usable here"
    return None


def runtime_offer(
    drivers: Mapping[str, Driver],
    *,
    which: Callable[[str], str | None] = shutil.which,
    microvm_probe: Callable[[], Capabilities] = microvm.probe,
) -> Offer:
    """What a node with ``drivers`` (keyed by runtime) offers, in the protocol's order."""
    offered: list[str] = []
    reasons: dict[str, str] = {}
    for runtime in (*RUNTIMES, *(r for r in drivers if r not in RUNTIMES)):
        driver = drivers.get(runtime)
        if driver is not None:
            caps = driver.capabilities()
            if caps.available:
                offered.append(runtime)
            else:
                reasons[runtime] = "; ".join(caps.notes) or f"its {runtime} driver cannot run here"
            continue
        problem = _host_problem(runtime, which, microvm_probe)
        reasons[runtime] = problem or f"this agent runs no {runtime} driver"
    return Offer(runtimes=offered, reasons=reasons)
