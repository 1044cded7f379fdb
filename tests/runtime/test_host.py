"""Which runtimes this host offers and how much it can hand out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shellwego.runtime import microvm
from shellwego.runtime.host import available_runtimes, host_capacity


def test_microvm_probe_without_kvm_says_why(tmp_path: Path) -> None:
    caps = microvm.probe(tmp_path / "kvm")
    assert caps.runtime == "microvm" and not caps.available
    assert "not present on this host" in caps.notes[0]
    assert "KVM" in caps.notes[0]


def test_microvm_probe_without_firecracker_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    caps = microvm.probe(kvm)
    assert not caps.available
    assert caps.notes[0] == "firecracker binary not found on PATH"


def test_microvm_probe_with_kvm_and_firecracker_is_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "firecracker").write_text("#!/bin/sh\n")
    (bindir / "firecracker").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    caps = microvm.probe(kvm)
    assert caps.available and caps.memory_limit


def test_host_offers_the_process_runtime_and_microvm_only_when_probed_available() -> None:
    runtimes = available_runtimes()
    assert runtimes[0] == "process"
    assert ("microvm" in runtimes) == microvm.probe().available


def test_host_capacity_is_within_what_the_machine_has() -> None:
    cpu, memory = host_capacity()
    assert 0 < cpu <= len(os.sched_getaffinity(0)) * 1000
    total_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    assert 0 < memory <= total_kb * 1024
