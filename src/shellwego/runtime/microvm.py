"""The microvm runtime's host check: KVM and a Firecracker binary, or why not.

Only the probe lives here: it tells the agent (and the node's advertised runtimes) whether
this host can run microVMs at all, and in words why not when it cannot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .driver import Capabilities

RUNTIME = "microvm"


def _cpu_has_virtualisation(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether the CPU flags show VT-x/AMD-V; None when cpuinfo cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return bool(flags & {"vmx", "svm"})
    return None


def probe(kvm_path: Path = Path("/dev/kvm")) -> Capabilities:
    """Whether the microvm runtime can run here: ``kvm_path`` usable and ``firecracker`` found."""
    if not kvm_path.exists():
        return Capabilities(
            runtime=RUNTIME,
            available=False,
            notes=(
                f"{kvm_path} is not present on this host: the microvm runtime needs "
                "hardware virtualisation (KVM)",
            ),
        )
    if not os.access(kvm_path, os.R_OK | os.W_OK):
        return Capabilities(
            runtime=RUNTIME,
            available=False,
            notes=(
                f"{kvm_path} is not readable and writable by this user: add it to the kvm group",
            ),
        )
    notes: list[str] = []
    if _cpu_has_virtualisation() is False:
        notes.append(
            f"{kvm_path} exists but the CPU shows no vmx/svm flags: KVM is paravirtualised "
            "(nested, e.g. PVM) and stock guest kernels may not boot under it"
        )
    if shutil.which("firecracker") is None:
        notes.insert(0, "firecracker binary not found on PATH")
        return Capabilities(runtime=RUNTIME, available=False, notes=tuple(notes))
    return Capabilities(
        runtime=RUNTIME,
        available=True,
        isolation=("kvm", "firecracker"),
        memory_limit=True,
        cpu_limit=True,
        notes=tuple(notes),
    )
