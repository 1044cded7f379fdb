"""Several runtimes on one node: each instance goes to the driver of its runtime, an
instance of a runtime the node lacks fails with the reason, and ``prepare`` fetches slugs."""

from __future__ import annotations

from pathlib import Path

from shellwego.agent.reconcile import Executor
from shellwego.runtime.driver import InstanceState
from shellwego.runtime.drivers import DriverSet
from shellwego.runtime.fake import FakeDriver

from .helpers import DIGEST, assignment

IMAGE = {"kind": "image", "reference": "registry.example/web:1", "digest": None}


def node(tmp_path: Path) -> tuple[DriverSet, FakeDriver, FakeDriver, list[str]]:
    fetched: list[str] = []

    async def slug(digest: str, uid: int | None) -> Path:
        fetched.append(digest)
        return tmp_path / digest

    process, oci = FakeDriver(), FakeDriver()
    drivers = DriverSet(
        {"process": process, "oci": oci},
        slugs=slug,
        missing={"microvm": "/dev/kvm is not present on this host"},
    )
    return drivers, process, oci, fetched


async def test_each_instance_runs_on_the_driver_of_its_runtime(tmp_path: Path) -> None:
    drivers, process, oci, fetched = node(tmp_path)
    executor = Executor(drivers)
    desired = [
        assignment("p1", port=20001),
        assignment("o1", port=20002, runtime="oci", slug_digest=None, artifact=IMAGE),
    ]
    done = await executor.apply(desired)
    assert sorted(a.instance_id for a in done) == ["o1", "p1"]
    assert process.running_ids() == {"p1"} and oci.running_ids() == {"o1"}
    # the slug was fetched by prepare and its directory handed to the driver; the image
    # is the driver's to pull
    assert fetched and set(fetched) == {DIGEST}
    assert process.spec_of("p1").app_dir == tmp_path / DIGEST
    assert oci.spec_of("o1").app_dir is None
    assert oci.spec_of("o1").artifact is not None
    assert {s.instance_id for s in await drivers.list()} == {"p1", "o1"}

    assert [(a.kind, a.instance_id) for a in await executor.apply(desired[:1])] == [
        ("stop", "o1"),
        ("remove", "o1"),
    ]
    assert oci.running_ids() == set() and process.running_ids() == {"p1"}
    assert (await drivers.inspect("o1")).state == InstanceState.UNKNOWN


async def test_a_runtime_the_node_lacks_is_an_instance_error_saying_why(tmp_path: Path) -> None:
    drivers, process, oci, _ = node(tmp_path)
    executor = Executor(drivers)
    assert await executor.apply([assignment("m1", runtime="microvm")]) == []
    failures, error, code = executor.failures()["m1"]
    assert failures == 1 and code == "runtime-unavailable"
    assert error == (
        "this node does not offer the microvm runtime: /dev/kvm is not present on this host"
    )
    assert process.actions == [] and oci.actions == []


async def test_a_lone_driver_answers_for_ids_it_does_not_know(tmp_path: Path) -> None:
    only = FakeDriver()
    drivers = DriverSet({"process": only})
    assert (await drivers.stop("nobody")).state == InstanceState.UNKNOWN
    assert drivers.runtimes == ["process"]
