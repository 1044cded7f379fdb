"""Which runtimes this host offers and how much it can hand out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shellwego.runtime import microvm
from shellwego.runtime.fake import FakeDriver
from shellwego.runtime.host import host_capacity
from shellwego.runtime.offer import runtime_offer
from shellwego.runtime.process import ProcessDriver


def test_microvm_probe_without_kvm_says_why(tmp_path: Path) -> None:
    caps = microvm.probe(tmp_path / "kvm")
    assert caps.runtime == "microvm" and not caps.available
    assert "not present on this host" in caps.notes[0]
    assert "KVM" in caps.notes[0]


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    return path


def _fake_kvm(tmp_path: Path) -> Path:
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    return kvm


def _kvm_answers(path: Path) -> int:
    return microvm.KVM_API_VERSION


def test_microvm_probe_of_a_device_that_is_not_kvm_says_so(tmp_path: Path) -> None:
    caps = microvm.probe(_fake_kvm(tmp_path), _cpuinfo(tmp_path, "vmx"))
    assert not caps.available
    assert caps.notes[0].startswith(f"{tmp_path / 'kvm'} is not a usable KVM device (")


def test_microvm_probe_of_paravirtualised_kvm_says_guests_will_not_boot(tmp_path: Path) -> None:
    caps = microvm.probe(_fake_kvm(tmp_path), _cpuinfo(tmp_path, "hypervisor"), _kvm_answers)
    assert not caps.available
    assert "paravirtualised" in caps.notes[0]
    assert "stock guest kernels do not boot" in caps.notes[0]


def test_microvm_probe_of_this_host_says_why_not_when_it_cannot() -> None:
    caps = microvm.probe()
    if not caps.available:
        assert caps.notes and caps.notes[0]
    if Path("/dev/kvm").exists() and "vmx" not in Path("/proc/cpuinfo").read_text():
        assert not caps.available  # e.g. nested PVM on the project's machines


def test_microvm_probe_without_firecracker_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    caps = microvm.probe(_fake_kvm(tmp_path), _cpuinfo(tmp_path, "svm"), _kvm_answers)
    assert not caps.available
    assert caps.notes == ("firecracker binary not found on PATH",)


def test_microvm_probe_with_kvm_and_firecracker_is_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "firecracker").write_text("#!/bin/sh\n")
    (bindir / "firecracker").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    caps = microvm.probe(_fake_kvm(tmp_path), _cpuinfo(tmp_path, "vmx"), _kvm_answers)
    assert caps.available and caps.memory_limit


async def test_an_agent_offers_only_the_runtimes_it_has_drivers_for(tmp_path: Path) -> None:
    process = ProcessDriver(tmp_path / "instances", run_as=None)
    fake = FakeDriver()
    no_kvm = lambda: microvm.probe(tmp_path / "kvm", _cpuinfo(tmp_path, "vmx"), _kvm_answers)  # noqa: E731
    offer = runtime_offer({"process": process}, which=lambda _: None, microvm_probe=no_kvm)
    assert offer.runtimes == ["process"]
    assert offer.reasons["oci"] == "no crun or runc found on PATH"
    assert "kvm is not present on this host" in offer.reasons["microvm"]
    both = runtime_offer(
        {"process": process, "oci": fake}, which=lambda _: "/usr/bin/runc", microvm_probe=no_kvm
    )
    assert both.runtimes == ["process", "oci"] and set(both.reasons) == {"microvm"}
    # runc present but no driver for it in this agent: said so, not offered
    alone = runtime_offer(
        {"process": process}, which=lambda _: "/usr/bin/runc", microvm_probe=no_kvm
    )
    assert alone.reasons["oci"] == "this agent runs no oci driver"


def test_host_capacity_is_within_what_the_machine_has() -> None:
    cpu, memory = host_capacity()
    assert 0 < cpu <= len(os.sched_getaffinity(0)) * 1000
    total_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    assert 0 < memory <= total_kb * 1024
