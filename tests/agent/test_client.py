"""The protocol client against the real control plane, and when it is unreachable."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from shellwego.agent.client import ControlPlaneClient
from shellwego.errors import Conflict, NotFound, RuntimeFailure, Unauthenticated, Unavailable
from shellwego.models.agentprotocol import Heartbeat

from .conftest import Plane

CAPACITY = {"cpu_millis": 1000, "memory_bytes": 1 << 30}
BEAT = Heartbeat.model_validate({"capacity": CAPACITY})


async def registered(plane: Plane) -> ControlPlaneClient:
    client = ControlPlaneClient(plane.url)
    try:
        reg = await client.register(
            plane.join_token,
            hostname="node-c",
            capacity=CAPACITY,
            runtimes=["process"],
            labels={},
            agent_version="test",
            address="127.0.0.1",
        )
    except BaseException:
        await client.aclose()
        raise
    assert reg.node_token.startswith("swgn_")
    assert reg.node_token not in repr(reg)
    client.node_token = reg.node_token
    return client


async def test_protocol_round_trip(plane: Plane, tmp_path: Path) -> None:
    client = await registered(plane)
    try:
        answer = await client.heartbeat(BEAT)
        assert answer.node_status == "ready"
        first = await client.assignments(0, wait=0)
        assert first.instances == []
        assert first.index >= 1
        # nothing changed: the blocking query returns after the wait anyway
        again = await client.assignments(first.index, wait=0.2)
        assert again.index == first.index

        digest = plane.artifacts.add({"Procfile": b"web: serve\n"})
        dest = await client.download_artifact(digest, tmp_path / "dl" / "slug.tar.gz")
        assert dest.read_bytes() == plane.artifacts.path(digest).read_bytes()

        with pytest.raises(NotFound):
            await client.download_artifact("b" * 64, tmp_path / "dl" / "missing.tar.gz")
        # a slug whose content does not match its digest is refused and not kept
        fake = "c" * 64
        plane.artifacts.path(fake).write_bytes(b"not what the digest says")
        with pytest.raises(RuntimeFailure, match="sha256"):
            await client.download_artifact(fake, tmp_path / "dl" / "fake.tar.gz")
        assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["slug.tar.gz"]
    finally:
        await client.aclose()


async def test_refusals_map_to_errors(plane: Plane) -> None:
    client = ControlPlaneClient(plane.url, node_token="swgn_not-a-real-token")
    try:
        with pytest.raises(Unauthenticated):
            await client.heartbeat(Heartbeat())
        with pytest.raises(Unauthenticated):
            await client.register(
                "swgj_wrong",
                hostname="node-x",
                capacity=CAPACITY,
                runtimes=["process"],
                labels={},
                agent_version="test",
                address="127.0.0.1",
            )
    finally:
        await client.aclose()
    first = await registered(plane)
    await first.aclose()
    with pytest.raises(Conflict):
        await registered(plane)  # the hostname is taken by a node


async def test_unreachable_control_plane_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ControlPlaneClient(f"http://127.0.0.1:{port}", node_token="swgn_x")
    try:
        with pytest.raises(Unavailable):
            await client.heartbeat(Heartbeat())
        with pytest.raises(Unavailable):
            await client.assignments(0, wait=1)
        with pytest.raises(Unavailable):
            await client.download_artifact("d" * 64, tmp_path / "x.tar.gz")
        assert list(tmp_path.iterdir()) == []
    finally:
        await client.aclose()
