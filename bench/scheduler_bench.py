"""Scheduler throughput: 10,000 instances onto 1,000 nodes, binpack and spread.

Prints placements per second for one ``plan`` call placing everything, and for the first
and the last 10% of the placements (the cluster empty, then nearly full), measured two
ways: inside one ``Planner`` run, and as separate ``plan`` calls on snapshots taken at 0%
and 90% of the placements (which includes reading the snapshot's instances).

Run: .venv/bin/python bench/scheduler_bench.py
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence

from shellwego.scheduler import (
    InstanceSnapshot,
    NodeSnapshot,
    Placement,
    PlacementRequest,
    Planner,
    Resources,
    Snapshot,
    plan,
)

GIB = 1024**3
MIB = 1024**2
NODES = 1_000
INSTANCES = 10_000
REPEATS = 3
SIZES = (
    (Resources(250, 256 * MIB), 25),
    (Resources(500, 512 * MIB), 35),
    (Resources(1000, GIB), 25),
    (Resources(2000, 2 * GIB), 15),
)


def build_nodes() -> list[NodeSnapshot]:
    """800 nodes of 8 cores / 32 GiB and 200 of 16 cores / 64 GiB, in two regions."""
    nodes = []
    for number in range(NODES):
        big = number % 5 == 4
        runtimes = {"process", "oci"} if number % 10 else {"process", "oci", "microvm"}
        nodes.append(
            NodeSnapshot(
                id=f"node-{number:04d}",
                status="ready",
                runtimes=frozenset(runtimes),
                labels={"region": "eu" if number % 2 else "us", "disk": "ssd"},
                allocatable=Resources(16_000, 64 * GIB) if big else Resources(8_000, 32 * GIB),
            )
        )
    return nodes


def build_requests(strategy: str) -> list[PlacementRequest]:
    """100 requests (50 apps x web/worker) of mixed sizes adding up to 10,000 instances."""
    chooser = random.Random(7)
    sizes = [size for size, weight in SIZES for _ in range(weight)]
    requests = []
    for number in range(100):
        app = f"app-{number // 2:02d}"
        constraints = {"region": "eu"} if number % 7 == 0 else {}
        requests.append(
            PlacementRequest(
                app_id=app,
                process_type="web" if number % 2 == 0 else "worker",
                release_id=f"{app}-v1",
                count=INSTANCES // 100,
                resources=chooser.choice(sizes),
                runtime="oci" if number % 3 == 0 else "process",
                constraints=constraints,
                strategy=strategy,
            )
        )
    return requests


def split(
    requests: Sequence[PlacementRequest], at: int
) -> tuple[list[PlacementRequest], list[PlacementRequest]]:
    """The requests for the first ``at`` instances, and those for the rest."""
    head: list[PlacementRequest] = []
    tail: list[PlacementRequest] = []
    seen = 0
    for request in requests:
        take = min(max(at - seen, 0), request.count)
        if take:
            head.append(_with_count(request, take))
        if request.count - take:
            tail.append(_with_count(request, request.count - take))
        seen += request.count
    return head, tail


def _with_count(request: PlacementRequest, count: int) -> PlacementRequest:
    return PlacementRequest(
        app_id=request.app_id,
        process_type=request.process_type,
        release_id=request.release_id,
        count=count,
        resources=request.resources,
        runtime=request.runtime,
        constraints=request.constraints,
        strategy=request.strategy,
    )


def as_instances(placements: Sequence[Placement]) -> list[InstanceSnapshot]:
    return [
        InstanceSnapshot(
            id=f"inst-{number:05d}",
            app_id=placement.app_id,
            process_type=placement.process_type,
            release_id=placement.release_id,
            node_id=placement.node_id,
            resources=placement.resources,
        )
        for number, placement in enumerate(placements)
    ]


def timed(action: Callable[[], object]) -> float:
    durations = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        action()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def planner_phases(snapshot: Snapshot, requests: list[PlacementRequest]) -> tuple[float, float]:
    """Seconds for the first and the last 10% of placements inside one Planner run."""
    tenth = INSTANCES // 10
    first, rest = split(requests, tenth)
    middle, last = split(rest, INSTANCES - 2 * tenth)
    firsts, lasts = [], []
    for _ in range(REPEATS):
        planner = Planner(snapshot)
        started = time.perf_counter()
        for request in first:
            planner.place(request)
        firsts.append(time.perf_counter() - started)
        for request in middle:
            planner.place(request)
        started = time.perf_counter()
        for request in last:
            planner.place(request)
        lasts.append(time.perf_counter() - started)
    return statistics.median(firsts), statistics.median(lasts)


def overcommitted(placements: Sequence[Placement], nodes: Sequence[NodeSnapshot]) -> list[str]:
    """Nodes the placements ask more CPU or memory of than they have (a sanity check)."""
    cpu: Counter[str] = Counter()
    memory: Counter[str] = Counter()
    for placement in placements:
        cpu[placement.node_id] += placement.resources.cpu_millis
        memory[placement.node_id] += placement.resources.memory_bytes
    return [
        node.id
        for node in nodes
        if cpu[node.id] > node.allocatable.cpu_millis
        or memory[node.id] > node.allocatable.memory_bytes
    ]


def run(strategy: str) -> None:
    nodes = build_nodes()
    requests = build_requests(strategy)
    empty = Snapshot(nodes=nodes, instances=[])
    tenth = INSTANCES // 10

    result = plan(empty, requests)
    assert len(result.placements) == INSTANCES
    assert not overcommitted(result.placements, nodes), "the plan overcommits a node"
    used_nodes = len(Counter(placement.node_id for placement in result.placements))
    cpu_share = sum(p.resources.cpu_millis for p in result.placements) / sum(
        node.allocatable.cpu_millis for node in nodes
    )

    overall = timed(lambda: plan(empty, requests))
    inner_first, inner_last = planner_phases(empty, requests)

    head, last = split(requests, INSTANCES - tenth)
    first, _ = split(requests, tenth)
    nearly_full = Snapshot(nodes=nodes, instances=as_instances(plan(empty, head).placements))
    call_first = timed(lambda: plan(empty, first))
    call_last = timed(lambda: plan(nearly_full, last))

    print(
        f"{strategy}: {INSTANCES} instances on {NODES} nodes "
        f"({used_nodes} nodes used, {cpu_share:.0%} of the cluster's CPU allocated)"
    )
    print(f"  one plan() call, all placements   {INSTANCES / overall:>10,.0f} placements/s")
    print(f"  Planner run, first 10%            {tenth / inner_first:>10,.0f} placements/s")
    print(f"  Planner run, last 10%             {tenth / inner_last:>10,.0f} placements/s")
    print(f"  plan() on empty cluster, 10%      {tenth / call_first:>10,.0f} placements/s")
    print(f"  plan() on 90%-placed cluster, 10% {tenth / call_last:>10,.0f} placements/s")


def main() -> None:
    for strategy in ("binpack", "spread"):
        run(strategy)


if __name__ == "__main__":
    main()
