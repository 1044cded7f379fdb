"""What an agent tells the control plane about its machine besides capacity.

The kernel release and the hardware capabilities (``Node.kernel_version`` and
``Node.capabilities``), read from the running system at start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shellwego.models.values import NodeCapabilities
from shellwego.runtime.host import cpu_flags
from shellwego.runtime.microvm import kvm_problem


def kernel_version() -> str:
    return os.uname().release


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``), sorted."""
    return sorted(cpu_flags(cpuinfo) or ())[:512]


def _nested(sys_module: Path) -> bool:
    for module in ("kvm_intel", "kvm_amd"):
        try:
            value = (sys_module / module / "parameters" / "nested").read_text().strip()
        except OSError:
            continue
        if value in ("Y", "1"):
            return True
    return False


def capabilities(
    dev: Path = Path("/dev"),
    sys_module: Path = Path("/sys/module"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> NodeCapabilities:
    kvm = kvm_problem(dev / "kvm") is None
    gpu = (dev / "nvidia0").exists() or any((dev / "dri").glob("renderD*"))
    return NodeCapabilities(
        kvm=kvm,
        nested_virtualization=_nested(sys_module),
        cpu_features=cpu_features(cpuinfo),
        gpu=gpu,
    )


def machine() -> dict[str, Any]:
    """The facts as the register and heartbeat bodies carry them."""
    return {"kernel_version": kernel_version(), "capabilities": capabilities().model_dump()}
