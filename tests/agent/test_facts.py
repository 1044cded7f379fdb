"""What an agent reports about its machine: kernel release and capabilities."""

from __future__ import annotations

import os
from pathlib import Path

from shellwego.agent import facts


def test_kernel_version_is_the_running_kernel() -> None:
    assert facts.kernel_version() == os.uname().release
    assert facts.machine()["kernel_version"] == os.uname().release


def test_capabilities_read_from_the_system_files(tmp_path: Path) -> None:
    dev, sys_module = tmp_path / "dev", tmp_path / "sys"
    (dev / "dri").mkdir(parents=True)
    (dev / "dri" / "renderD128").write_text("")
    (sys_module / "kvm_intel" / "parameters").mkdir(parents=True)
    (sys_module / "kvm_intel" / "parameters" / "nested").write_text("Y\n")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: sse4_2 vmx avx2 vmx\n\nprocessor\t: 1\n")
    found = facts.capabilities(dev=dev, sys_module=sys_module, cpuinfo=cpuinfo)
    assert found.model_dump() == {"kvm": False, "nested_virtualization": True,
                                  "cpu_features": ["avx2", "sse4_2", "vmx"], "gpu": True}


def test_no_kvm_no_gpu_no_flags(tmp_path: Path) -> None:
    found = facts.capabilities(dev=tmp_path, sys_module=tmp_path, cpuinfo=tmp_path / "none")
    assert found.model_dump() == {"kvm": False, "nested_virtualization": False,
                                  "cpu_features": [], "gpu": False}
