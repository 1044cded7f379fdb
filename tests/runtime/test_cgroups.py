"""Finding the host's cgroup layout: cgroup v2, v1, or the hybrid of both (as on the
project's machines), from mount tables; each hierarchy is a plain directory here."""

from __future__ import annotations

from pathlib import Path

from shellwego.runtime.cgroups import CGROUP_PARENT, Cgroups


def _v2(root: Path, controllers: str) -> Path:
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


def test_cgroup_v2_with_memory_and_cpu(tmp_path: Path) -> None:
    mount = _v2(tmp_path / "unified", "cpuset cpu io memory pids")
    found = Cgroups.detect([("cgroup2", mount, {"rw", "nsdelegate"})], {"": "/"})
    assert (found.version, found.note) == (2, None)
    assert found.parents == {"unified": mount / CGROUP_PARENT}
    assert found.cpu_limit and found.pids_limit
    subtree = (mount / CGROUP_PARENT / "cgroup.subtree_control").read_text()
    assert subtree == "+memory +cpu +pids"
    dirs = found.create("i-1", 64 << 20, 250, 512)
    assert dirs == {"unified": str(mount / CGROUP_PARENT / "i-1")}
    assert (mount / CGROUP_PARENT / "i-1" / "memory.max").read_text() == str(64 << 20)
    assert (mount / CGROUP_PARENT / "i-1" / "cpu.max").read_text() == "25000 100000"
    assert (mount / CGROUP_PARENT / "i-1" / "pids.max").read_text() == "512"


def test_cgroup_v2_without_the_pids_controller_still_limits_memory(tmp_path: Path) -> None:
    mount = _v2(tmp_path / "unified", "cpu memory")
    found = Cgroups.detect([("cgroup2", mount, {"rw"})], {"": "/"})
    assert found.version == 2 and not found.pids_limit
    assert (mount / CGROUP_PARENT / "cgroup.subtree_control").read_text() == "+memory +cpu"
    found.create("i-1", 64 << 20, None, 512)
    assert not (mount / CGROUP_PARENT / "i-1" / "pids.max").exists()


def test_cgroup_v1_under_this_process_own_cgroups(tmp_path: Path) -> None:
    memory, cpu, pids = tmp_path / "memory", tmp_path / "cpu,cpuacct", tmp_path / "pids"
    for path in (memory / "agents" / "a1", cpu, pids):
        path.mkdir(parents=True)
    mounts = [
        ("cgroup", memory, {"rw", "memory"}),
        ("cgroup", cpu, {"rw", "cpu", "cpuacct"}),
        ("cgroup", pids, {"rw", "pids"}),
    ]
    own = {"memory": "/agents/a1", "cpu": "/", "cpuacct": "/", "pids": "/"}
    found = Cgroups.detect(mounts, own)
    assert found.version == 1 and found.note is None and found.pids_limit
    assert found.parents == {
        "memory": memory / "agents" / "a1" / CGROUP_PARENT,
        "cpu": cpu / CGROUP_PARENT,
        "cpuacct": cpu / CGROUP_PARENT,
        "pids": pids / CGROUP_PARENT,
    }
    assert not (memory / "agents" / "a1" / CGROUP_PARENT).exists()  # made with an instance
    dirs = found.create("i-1", 64 << 20, None, 300)
    assert (pids / CGROUP_PARENT / "i-1" / "pids.max").read_text() == "300"
    assert dirs["pids"] == str(pids / CGROUP_PARENT / "i-1")


def test_hybrid_layout_uses_the_v1_controllers(tmp_path: Path) -> None:
    unified = _v2(tmp_path / "unified", "")  # v2 mounted, its controllers all on v1
    memory = tmp_path / "memory"
    memory.mkdir()
    mounts = [("cgroup2", unified, {"rw"}), ("cgroup", memory, {"rw", "memory"})]
    found = Cgroups.detect(mounts, {"": "/", "memory": "/"})
    assert found.version == 1
    assert found.parents == {"memory": memory / CGROUP_PARENT}
    assert not found.cpu_limit
    assert not (unified / CGROUP_PARENT).exists()


def test_no_usable_cgroups_say_why(tmp_path: Path) -> None:
    none = Cgroups.detect([], {})
    assert not none.available
    assert none.note == (
        "no cgroup memory controller is mounted: instances run without memory/CPU limits"
    )
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / CGROUP_PARENT).write_text("a file where the subtree would go")
    mount = _v2(blocked / "unified", "memory cpu")
    (mount / CGROUP_PARENT).write_text("")
    found = Cgroups.detect([("cgroup2", mount, {"rw"})], {"": "/"})
    assert not found.available
    assert found.note is not None and found.note.startswith(f"cgroup v2 at {mount} is not writable")
