"""The microvm runtime's host check: a working KVM and a Firecracker binary, or why not.

Only the probe lives here (there is no microvm driver yet, so agents never offer the
runtime): it tells an operator, in words, whether this host could run microVMs. ``/dev/kvm``
must exist, be open to this user, answer the KVM API and come with hardware
virtualisation: a paravirtualised KVM (nested, e.g. PVM, where the CPU shows no vmx/svm
flags) does not boot stock guest kernels.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .driver import Capabilities
from .host import cpu_flags

RUNTIME = "microvm"
KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
KVM_API_VERSION = 12  # the only stable KVM API version


def _cpu_has_virtualisation(cpuinfo: Path) -> bool | None:
    """Whether the x86 CPU flags show VT-x/AMD-V; None when cpuinfo lists no x86 flags."""
    flags = cpu_flags(cpuinfo, keys=("flags",))
    return None if flags is None else bool(flags & {"vmx", "svm"})


def kvm_api_version(kvm_path: Path) -> int | str:
    """The KVM API version ``kvm_path`` answers, or why it answers none."""
    try:
        fd = os.open(kvm_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        return int(fcntl.ioctl(fd, KVM_GET_API_VERSION))
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        os.close(fd)


def _unavailable(*notes: str) -> Capabilities:
    return Capabilities(runtime=RUNTIME, available=False, notes=notes)


def kvm_problem(
    kvm_path: Path = Path("/dev/kvm"),
    api_version: Callable[[Path], int | str] = kvm_api_version,
) -> str | None:
    """Why ``kvm_path`` is not a usable KVM device (present, open to this user, answering
    the stable KVM API), or None when it is."""
    if not kvm_path.exists():
        return (
            f"{kvm_path} is not present on this host: the microvm runtime needs "
            "hardware virtualisation (KVM)"
        )
    if not os.access(kvm_path, os.R_OK | os.W_OK):
        return f"{kvm_path} is not readable and writable by this user: add it to the kvm group"
    version = api_version(kvm_path)
    if version != KVM_API_VERSION:
        why = version if isinstance(version, str) else f"API version {version}"
        return f"{kvm_path} is not a usable KVM device ({why})"
    return None


def probe(
    kvm_path: Path = Path("/dev/kvm"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
    api_version: Callable[[Path], int | str] = kvm_api_version,
) -> Capabilities:
    """Whether microVMs could run here: ``kvm_path`` usable and ``firecracker`` found."""
    problem = kvm_problem(kvm_path, api_version)
    if problem is not None:
        return _unavailable(problem)
    if _cpu_has_virtualisation(cpuinfo) is False:
        return _unavailable(
            f"{kvm_path} works but the CPU shows no vmx/svm flags: KVM is paravirtualised "
            "here (nested, e.g. PVM) and stock guest kernels do not boot under it"
        )
    if shutil.which("firecracker") is None:
        return _unavailable("firecracker binary not found on PATH")
    return Capabilities(
        runtime=RUNTIME,
        available=True,
        isolation=("kvm", "firecracker"),
        memory_limit=True,
        cpu_limit=True,
    )
