"""plan(): filters, scoring, determinism, capacity errors — examples and properties."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shellwego.errors import CapacityError, InvalidInput
from shellwego.scheduler import (
    InstanceSnapshot,
    NodeSnapshot,
    Placement,
    PlacementRequest,
    Plan,
    Planner,
    Resources,
    Snapshot,
    plan,
)
from shellwego.scheduler.units import human_cpu, human_memory

GIB = 1024**3
MIB = 1024**2
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def node(
    node_id: str,
    cpu: int = 8000,
    memory: int = 32 * GIB,
    status: str = "ready",
    runtimes: Sequence[str] = ("process",),
    labels: dict[str, str] | None = None,
) -> NodeSnapshot:
    return NodeSnapshot(
        id=node_id,
        status=status,
        runtimes=frozenset(runtimes),
        labels=labels or {},
        allocatable=Resources(cpu, memory),
    )


def instance(
    instance_id: str,
    node_id: str,
    cpu: int,
    memory: int,
    app: str = "other",
    process: str = "web",
    peers: int = 1,
) -> InstanceSnapshot:
    return InstanceSnapshot(
        id=instance_id,
        app_id=app,
        process_type=process,
        release_id=f"{app}-v1",
        node_id=node_id,
        resources=Resources(cpu, memory),
        peers=peers,
    )


def request(
    count: int,
    cpu: int = 1000,
    memory: int = GIB,
    app: str = "app",
    process: str = "web",
    **options: object,
) -> PlacementRequest:
    return PlacementRequest(
        app_id=app,
        process_type=process,
        release_id=f"{app}-v2",
        count=count,
        resources=Resources(cpu, memory),
        **options,  # type: ignore[arg-type]
    )


def usage(snapshot: Snapshot, placements: Sequence[Placement]) -> dict[str, list[int]]:
    used: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for existing in snapshot.instances:
        used[existing.node_id][0] += existing.resources.cpu_millis
        used[existing.node_id][1] += existing.resources.memory_bytes
    for placement in placements:
        used[placement.node_id][0] += placement.resources.cpu_millis
        used[placement.node_id][1] += placement.resources.memory_bytes
    return used


def overcommitted(snapshot: Snapshot, placements: Sequence[Placement]) -> list[str]:
    """Nodes whose allocatable the snapshot's instances plus ``placements`` exceed."""
    nodes = {n.id: n.allocatable for n in snapshot.nodes}
    after = usage(snapshot, placements)
    return sorted(
        node_id
        for node_id in {p.node_id for p in placements}
        if after[node_id][0] > nodes[node_id].cpu_millis
        or after[node_id][1] > nodes[node_id].memory_bytes
    )


# --- a naive reference planner: scans every node for every instance -------------------


def reference_plan(snapshot: Snapshot, requests: Sequence[PlacementRequest]) -> list[Placement]:
    """The documented semantics, written as plainly as possible (and slowly)."""
    free = {n.id: [n.allocatable.cpu_millis, n.allocatable.memory_bytes] for n in snapshot.nodes}
    holders: dict[tuple[str, str], set[str]] = defaultdict(set)
    peers: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for existing in snapshot.instances:
        if existing.node_id in free:
            free[existing.node_id][0] -= existing.resources.cpu_millis
            free[existing.node_id][1] -= existing.resources.memory_bytes
            holders[(existing.app_id, existing.process_type)].add(existing.node_id)
            peers[(existing.app_id, existing.process_type)][existing.node_id] += existing.peers

    def same(a: PlacementRequest, b: PlacementRequest) -> bool:
        return (a.app_id, a.process_type, a.runtime, dict(a.constraints), a.strategy) == (
            b.app_id,
            b.process_type,
            b.runtime,
            dict(b.constraints),
            b.strategy,
        ) and a.resources == b.resources

    first = [next(j for j in range(len(requests)) if same(requests[j], r)) for r in requests]
    order = sorted(
        range(len(requests)),
        key=lambda i: (
            -requests[i].resources.memory_bytes,
            -requests[i].resources.cpu_millis,
            first[i],
            i,
        ),
    )
    made: dict[int, list[Placement]] = {}
    for position in order:
        asked = requests[position]
        cpu, memory = asked.resources.cpu_millis, asked.resources.memory_bytes
        group = holders[(asked.app_id, asked.process_type)]
        peer_count = peers[(asked.app_id, asked.process_type)]
        made[position] = []
        for _ in range(asked.count):
            candidates = [
                n.id
                for n in snapshot.nodes
                if n.status == "ready"
                and asked.runtime in n.runtimes
                and all(n.labels.get(k) == v for k, v in asked.constraints.items())
                and free[n.id][0] >= cpu
                and free[n.id][1] >= memory
            ]
            if not candidates:
                raise CapacityError("reference: no room")
            spread = asked.strategy == "spread"
            sign = -1 if spread else 1
            best = min(
                candidates,
                key=lambda nid: (
                    nid in group,
                    peer_count[nid] if spread else 0,
                    sign * free[nid][1],
                    sign * free[nid][0],
                    nid,
                ),
            )
            free[best][0] -= cpu
            free[best][1] -= memory
            group.add(best)
            peer_count[best] += 1
            made[position].append(
                Placement(best, asked.app_id, asked.process_type, asked.release_id, asked.resources)
            )
    return [p for position in range(len(requests)) for p in made[position]]


# --- generated clusters -----------------------------------------------------------------

NODE_IDS = [f"n{number:02d}" for number in range(12)]


@st.composite
def clusters(draw: st.DrawFn) -> tuple[Snapshot, list[PlacementRequest]]:
    ids = draw(st.lists(st.sampled_from(NODE_IDS), min_size=1, max_size=12, unique=True))
    nodes = [
        node(
            node_id,
            cpu=draw(st.sampled_from([1000, 2000, 4000, 8000, 16000])),
            memory=draw(st.sampled_from([1, 2, 4, 8, 16])) * GIB,
            status=draw(st.sampled_from(["ready", "ready", "ready", "draining", "down"])),
            runtimes=draw(
                st.sampled_from([("process", "oci")] * 4 + [("process",), ("oci",), ("microvm",)])
            ),
            labels=draw(
                st.sampled_from(
                    [{}, {"region": "eu"}, {"region": "eu", "gpu": "no"}, {"gpu": "no"}]
                )
            ),
        )
        for node_id in ids
    ]
    existing = []
    for position, snap in enumerate(nodes):
        for number in range(draw(st.integers(0, 2))):
            existing.append(
                instance(
                    f"i{position}-{number}",
                    snap.id,
                    cpu=draw(st.sampled_from([250, 500])),
                    memory=draw(st.sampled_from([256, 512])) * MIB,
                    app=draw(st.sampled_from(["a", "b"])),
                    peers=draw(st.sampled_from([1, 1, 0, 3])),  # 0: being replaced
                )
            )
    requests = draw(
        st.lists(
            st.builds(
                request,
                count=st.integers(0, 8),
                cpu=st.sampled_from([0, 250, 500, 1000, 2000]),
                memory=st.sampled_from([128 * MIB, 512 * MIB, GIB, 3 * GIB]),
                app=st.sampled_from(["a", "b", "c"]),
                process=st.sampled_from(["web", "worker"]),
                runtime=st.sampled_from(["process", "oci"]),
                constraints=st.sampled_from([{}, {}, {}, {"region": "eu"}, {"gpu": "no"}]),
                strategy=st.sampled_from(["binpack", "spread"]),
            ),
            max_size=4,
        )
    )
    shuffled = draw(st.permutations(nodes))
    return Snapshot(nodes=shuffled, instances=existing), requests


def plan_or_none(snapshot: Snapshot, requests: Sequence[PlacementRequest]) -> Plan | None:
    try:
        return plan(snapshot, requests)
    except CapacityError:
        return None


@PROPERTY
@given(clusters())
def test_plan_matches_the_documented_order_or_fails_exactly_when_reference_fails(
    cluster: tuple[Snapshot, list[PlacementRequest]],
) -> None:
    snapshot, requests = cluster
    try:
        expected = reference_plan(snapshot, requests)
    except CapacityError:
        with pytest.raises(CapacityError):
            plan(snapshot, requests)
        return
    assert plan(snapshot, requests).placements == expected


@st.composite
def busy_clusters(draw: st.DrawFn) -> tuple[Snapshot, list[PlacementRequest]]:
    nodes = [
        node(
            f"n{number:02d}",
            cpu=draw(st.sampled_from([2000, 4000, 8000])),
            memory=draw(st.sampled_from([4, 8, 16])) * GIB,
        )
        for number in range(draw(st.integers(2, 30)))
    ]
    existing = [
        instance(
            f"i{number}",
            draw(st.sampled_from(nodes)).id,
            cpu=draw(st.sampled_from([250, 500, 1000])),
            memory=draw(st.sampled_from([256, 512, 1024])) * MIB,
            app=draw(st.sampled_from(["a", "b", "z"])),
        )
        for number in range(draw(st.integers(0, 20)))
    ]
    requests = draw(
        st.lists(
            st.builds(
                request,
                count=st.integers(1, 40),
                cpu=st.sampled_from([250, 500, 1000]),
                memory=st.sampled_from([256 * MIB, 512 * MIB, GIB]),
                app=st.sampled_from(["a", "b", "c"]),
                strategy=st.sampled_from(["binpack", "spread"]),
            ),
            min_size=1,
            max_size=4,
        )
    )
    return Snapshot(nodes=nodes, instances=existing), requests


@PROPERTY
@given(busy_clusters())
def test_plan_matches_the_reference_on_busy_clusters(
    cluster: tuple[Snapshot, list[PlacementRequest]],
) -> None:
    snapshot, requests = cluster
    try:
        expected = reference_plan(snapshot, requests)
    except CapacityError:
        with pytest.raises(CapacityError):
            plan(snapshot, requests)
        return
    assert plan(snapshot, requests).placements == expected


@PROPERTY
@given(clusters())
def test_plan_never_overcommits_and_respects_every_filter(
    cluster: tuple[Snapshot, list[PlacementRequest]],
) -> None:
    snapshot, requests = cluster
    result = plan_or_none(snapshot, requests)
    if result is None:
        return
    nodes = {n.id: n for n in snapshot.nodes}
    before = usage(snapshot, [])
    after = usage(snapshot, result.placements)
    for node_id in {p.node_id for p in result.placements}:
        allocatable = nodes[node_id].allocatable
        # Snapshot instances may already overcommit a node; placements never add to that.
        assert after[node_id][0] <= max(allocatable.cpu_millis, before[node_id][0])
        assert after[node_id][1] <= max(allocatable.memory_bytes, before[node_id][1])
        assert after[node_id][0] <= allocatable.cpu_millis
        assert after[node_id][1] <= allocatable.memory_bytes
    assert overcommitted(snapshot, result.placements) == []
    # Placements come back in request order, the right number for each request.
    expected_fields = [
        (r.app_id, r.process_type, r.release_id, r.resources)
        for r in requests
        for _ in range(r.count)
    ]
    got_fields = [(p.app_id, p.process_type, p.release_id, p.resources) for p in result.placements]
    assert got_fields == expected_fields
    position = 0
    for asked in requests:
        for placement in result.placements[position : position + asked.count]:
            target = nodes[placement.node_id]
            assert target.status == "ready"
            assert asked.runtime in target.runtimes
            for label, value in asked.constraints.items():
                assert target.labels.get(label) == value
        position += asked.count


@PROPERTY
@given(clusters(), st.randoms(use_true_random=False))
def test_plan_is_deterministic_whatever_the_node_order(
    cluster: tuple[Snapshot, list[PlacementRequest]], shuffler: object
) -> None:
    snapshot, requests = cluster
    first = plan_or_none(snapshot, requests)
    again = plan_or_none(snapshot, requests)
    nodes = list(snapshot.nodes)
    shuffler.shuffle(nodes)  # type: ignore[attr-defined]
    reordered = plan_or_none(Snapshot(nodes=nodes, instances=snapshot.instances), requests)
    assert first == again == reordered


@PROPERTY
@given(
    node_count=st.integers(1, 30),
    sizes=st.lists(
        st.tuples(st.integers(1, 1000), st.integers(1, 4 * GIB), st.integers(1, 40)),
        min_size=1,
        max_size=6,
    ),
    strategy=st.sampled_from(["binpack", "spread"]),
)
def test_everything_is_placed_when_capacity_clearly_suffices(
    node_count: int, sizes: list[tuple[int, int, int]], strategy: str
) -> None:
    # Each instance is at most 1/8 of a node; the demand is at most 40% of the cluster in
    # each dimension. A node that cannot take an instance is then more than 7/8 full in
    # some dimension, which the demand cannot achieve on every node at once.
    nodes = [node(f"n{i:03d}", cpu=8000, memory=32 * GIB) for i in range(node_count)]
    budget_cpu = budget_memory = 0.4 * node_count
    requests = []
    for number, (cpu, memory, count) in enumerate(sizes):
        fits = min(count, int(budget_cpu * 8000 // cpu), int(budget_memory * 32 * GIB // memory))
        if fits <= 0:
            continue
        budget_cpu -= fits * cpu / 8000
        budget_memory -= fits * memory / (32 * GIB)
        requests.append(
            request(fits, cpu=cpu, memory=memory, app=f"app{number % 2}", strategy=strategy)
        )
    result = plan(Snapshot(nodes=nodes), requests)
    assert len(result.placements) == sum(r.count for r in requests)
    assert overcommitted(Snapshot(nodes=nodes), result.placements) == []


@PROPERTY
@given(
    node_count=st.integers(1, 20),
    count=st.integers(1, 20),
    strategy=st.sampled_from(["binpack", "spread"]),
)
def test_replicas_go_to_distinct_nodes_while_there_are_enough(
    node_count: int, count: int, strategy: str
) -> None:
    nodes = [node(f"n{i:02d}") for i in range(node_count)]
    # Another app already fills some nodes unevenly: binpack would love to stack there.
    existing = [
        instance(f"x{i}", f"n{i:02d}", cpu=500 * (i % 4), memory=GIB * (i % 4) + 1)
        for i in range(node_count)
    ]
    result = plan(
        Snapshot(nodes=nodes, instances=existing),
        [request(count, cpu=250, memory=256 * MIB, strategy=strategy)],
    )
    per_node = Counter(p.node_id for p in result.placements)
    if count <= node_count:
        assert max(per_node.values()) == 1
    else:
        assert len(per_node) == node_count


def test_binpack_fills_the_fullest_node_and_spread_the_emptiest() -> None:
    nodes = [node("a"), node("b"), node("c")]
    existing = [
        instance("x1", "a", cpu=2000, memory=8 * GIB),
        instance("x2", "b", cpu=6000, memory=24 * GIB),
    ]
    snapshot = Snapshot(nodes=nodes, instances=existing)
    binpacked = plan(snapshot, [request(1, app="one"), request(1, app="two")])
    assert [p.node_id for p in binpacked.placements] == ["b", "b"]
    spread = plan(
        snapshot,
        [request(1, app="one", strategy="spread"), request(1, app="two", strategy="spread")],
    )
    assert [p.node_id for p in spread.placements] == ["c", "c"]
    # A node that cannot fit the instance is skipped however full it is.
    big = plan(snapshot, [request(1, cpu=3000, memory=9 * GIB, app="one")])
    assert [p.node_id for p in big.placements] == ["a"]


def test_binpack_keeps_whole_nodes_free_and_spread_uses_them_all() -> None:
    nodes = [node(f"n{i}") for i in range(4)]
    apps = [request(1, app=f"app{i}") for i in range(8)]
    assert {p.node_id for p in plan(Snapshot(nodes=nodes), apps).placements} == {"n0"}
    spread = [request(1, app=f"app{i}", strategy="spread") for i in range(8)]
    assert Counter(p.node_id for p in plan(Snapshot(nodes=nodes), spread).placements) == {
        "n0": 2,
        "n1": 2,
        "n2": 2,
        "n3": 2,
    }


def test_ties_are_broken_by_node_id() -> None:
    nodes = [node("zeta"), node("alpha"), node("mid")]
    assert plan(Snapshot(nodes=nodes), [request(1)]).placements[0].node_id == "alpha"
    spread = plan(Snapshot(nodes=nodes), [request(3, strategy="spread")])
    assert [p.node_id for p in spread.placements] == ["alpha", "mid", "zeta"]


def test_a_node_holding_a_replica_is_penalised_before_the_strategy() -> None:
    nodes = [node("a"), node("b")]
    # "a" is fuller, so binpack would pick it, but it already runs app/web (an older release).
    existing = [instance("old", "a", cpu=4000, memory=16 * GIB, app="app", process="web")]
    result = plan(Snapshot(nodes=nodes, instances=existing), [request(1)])
    assert result.placements[0].node_id == "b"
    # Another process type of the same app is not a replica: binpack picks "a".
    worker = plan(Snapshot(nodes=nodes, instances=existing), [request(1, process="worker")])
    assert worker.placements[0].node_id == "a"
    # When every candidate holds a replica, the strategy decides among them.
    third = plan(Snapshot(nodes=nodes, instances=existing), [request(3)])
    assert [p.node_id for p in third.placements] == ["b", "a", "a"]


def test_constraints_runtime_and_status_filter_nodes() -> None:
    nodes = [
        node("down", status="down", labels={"region": "eu"}, runtimes=("oci",)),
        node("draining", status="draining", labels={"region": "eu"}, runtimes=("oci",)),
        node("us", labels={"region": "us"}, runtimes=("oci",)),
        node("eu-process", labels={"region": "eu"}, runtimes=("process",)),
        node("eu-oci", labels={"region": "eu", "disk": "ssd"}, runtimes=("process", "oci")),
    ]
    asked = request(3, runtime="oci", constraints={"region": "eu", "disk": "ssd"})
    result = plan(Snapshot(nodes=nodes), [asked])
    assert {p.node_id for p in result.placements} == {"eu-oci"}
    with pytest.raises(CapacityError) as caught:
        plan(Snapshot(nodes=nodes), [request(1, runtime="microvm", constraints={"region": "eu"})])
    assert "no node is ready and offers runtime 'microvm'" in str(caught.value)
    assert "region=eu" in str(caught.value)
    assert caught.value.extra["eligible_nodes"] == 0


def test_placements_made_earlier_in_the_same_plan_consume_capacity() -> None:
    nodes = [node("a", cpu=2000, memory=2 * GIB), node("b", cpu=2000, memory=2 * GIB)]
    result = plan(Snapshot(nodes=nodes), [request(2, app="x"), request(2, app="y")])
    assert Counter(p.node_id for p in result.placements) == {"a": 2, "b": 2}
    with pytest.raises(CapacityError):
        plan(Snapshot(nodes=nodes), [request(2, app="x"), request(3, app="y")])


def test_capacity_error_names_the_request_and_the_largest_free_slot() -> None:
    nodes = [node("a", cpu=4000, memory=8 * GIB), node("b", cpu=4000, memory=8 * GIB)]
    existing = [
        instance("x1", "a", cpu=3500, memory=2 * GIB),
        instance("x2", "b", cpu=1000, memory=7 * GIB),
    ]
    asked = request(2, cpu=1500, memory=int(1.5 * GIB), app="shop", process="worker")
    with pytest.raises(CapacityError) as caught:
        plan(Snapshot(nodes=nodes, instances=existing), [asked])
    message = str(caught.value)
    assert "2 instances of app shop process worker" in message
    assert "1.5 cores and 1.5 GiB each" in message
    assert "none fit on the 2 eligible nodes" in message
    # Largest slot: node "a" has 6 GiB free but only 0.5 cores; "b" has 3 cores free.
    assert "largest free slot left is 0.5 cores and 6 GiB (on a)" in message
    assert "the most free CPU on any of them is 3 cores" in message
    assert caught.value.extra == {
        "app_id": "shop",
        "process_type": "worker",
        "count": 2,
        "cpu_millis": 1500,
        "memory_bytes": int(1.5 * GIB),
        "placeable": 0,
        "eligible_nodes": 2,
        "largest_free_cpu_millis": 500,
        "largest_free_memory_bytes": 6 * GIB,
    }
    assert caught.value.status == 409


def test_plan_is_all_or_nothing() -> None:
    nodes = [node("a", cpu=2000, memory=4 * GIB)]
    fits = request(1, app="small")
    too_many = request(3, app="big")
    with pytest.raises(CapacityError) as caught:
        plan(Snapshot(nodes=nodes), [fits, too_many])
    assert "only 1 fit" in str(caught.value)
    assert "3 instances of app big" in str(caught.value)


def test_planner_rolls_back_a_request_that_does_not_fit() -> None:
    nodes = [node("a", cpu=4000, memory=8 * GIB), node("b", cpu=4000, memory=8 * GIB)]
    nodes.append(node("c", cpu=1000, memory=GIB))
    planner = Planner(Snapshot(nodes=nodes))
    assert [p.node_id for p in planner.place(request(1, app="first"))] == ["c"]
    before = [planner.free(node_id) for node_id in "abc"], planner.placements
    with pytest.raises(CapacityError) as caught:
        planner.place(request(5, cpu=2000, memory=4 * GIB, app="second"))
    assert "only 4 fit" in str(caught.value)
    assert ([planner.free(node_id) for node_id in "abc"], planner.placements) == before
    # The failed attempt left no replica behind: both nodes are still fresh for "second".
    placed = planner.place(request(2, cpu=2000, memory=4 * GIB, app="second"))
    assert [p.node_id for p in placed] == ["a", "b"]
    assert planner.free("a") == planner.free("b") == Resources(2000, 4 * GIB)
    assert len(planner.placements) == 3


def test_place_most_places_what_fits_where_one_at_a_time_would() -> None:
    nodes = [node("a", cpu=4000, memory=8 * GIB), node("b", cpu=2000, memory=4 * GIB)]
    big = request(5, cpu=2000, memory=4 * GIB, strategy="spread")
    most = Planner(Snapshot(nodes=nodes))
    made, error = most.place_most(big)
    one_by_one = Planner(Snapshot(nodes=nodes))
    singles = []
    for _ in range(big.count):
        try:
            singles += one_by_one.place(request(1, cpu=2000, memory=4 * GIB, strategy="spread"))
        except CapacityError:
            break
    assert [p.node_id for p in made] == [p.node_id for p in singles] == ["a", "b", "a"]
    assert error is not None and "cannot place 5 instances" in error.detail
    assert "only 3 fit" in error.detail and error.extra["placeable"] == 3
    assert most.placements == made  # kept, unlike a failed place()
    assert most.free("a") == Resources(0, 0)
    nothing, full = most.place_most(request(2, cpu=500, memory=GIB, app="other"))
    assert nothing == [] and full is not None and "none fit" in full.detail
    whole = Planner(Snapshot(nodes=nodes)).place_most(request(2, cpu=2000, memory=4 * GIB))
    assert len(whole[0]) == 2 and whole[1] is None


def test_zero_count_and_empty_requests_place_nothing() -> None:
    assert plan(Snapshot(nodes=[]), []) == Plan(placements=[])
    assert plan(Snapshot(nodes=[]), [request(0)]).placements == []


def test_invalid_input_is_refused() -> None:
    with pytest.raises(InvalidInput):
        request(1, strategy="random")
    with pytest.raises(InvalidInput):
        request(-1)
    with pytest.raises(InvalidInput):
        request(1, cpu=-5)
    with pytest.raises(InvalidInput):
        node("a", status="sleeping")
    with pytest.raises(InvalidInput):
        plan(Snapshot(nodes=[node("a"), node("a")]), [request(1)])


def test_resources_helpers() -> None:
    small = Resources(500, 512 * MIB)
    big = Resources(2000, 2 * GIB)
    assert small.add(small) == small + small == Resources(1000, GIB)
    assert big.sub(small) == big - small == Resources(1500, 1536 * MIB)
    assert small.fits(big)
    assert not big.fits(small)
    assert not Resources(500, 4 * GIB).fits(big)
    assert not Resources(4000, GIB).fits(big)


def test_human_units() -> None:
    assert human_cpu(500) == "0.5 cores"
    assert human_cpu(1000) == "1 core"
    assert human_cpu(2250) == "2.25 cores"
    assert human_memory(512 * MIB) == "512 MiB"
    assert human_memory(int(1.5 * GIB)) == "1.5 GiB"
    assert human_memory(100) == "100 B"
    assert human_memory(-5) == "0 B"


def test_spread_evens_out_peers_before_looking_at_free_capacity() -> None:
    """A restart: 2+2 old replicas (no peers: they are being replaced) on a node "a" much
    emptier than "b" (which runs another app). Spread puts the new ones 2+2 all the same."""
    nodes = [node("a"), node("b")]
    old = [
        instance(f"old-{n}-{i}", n, cpu=1000, memory=GIB, app="app", peers=0)
        for n in ("a", "b")
        for i in range(2)
    ]
    other = [instance("ballast", "b", cpu=4000, memory=16 * GIB)]
    snapshot = Snapshot(nodes=nodes, instances=old + other)
    placed = plan(snapshot, [request(4, strategy="spread")]).placements
    assert Counter(p.node_id for p in placed) == {"a": 2, "b": 2}
    # one at a time, as a rollout with surge 1 places them: the same 2+2
    planner = Planner(snapshot)
    one_by_one = [planner.place(request(1, strategy="spread"))[0].node_id for _ in range(4)]
    assert Counter(one_by_one) == {"a": 2, "b": 2}
    # peers that stay count: with 2 already on "b", the next two go to "a"
    staying = [instance(f"new-{i}", "b", cpu=1000, memory=GIB, app="app") for i in range(2)]
    with_staying = Snapshot(nodes=nodes, instances=old + other + staying)
    more = plan(with_staying, [request(2, strategy="spread")])
    assert [p.node_id for p in more.placements] == ["a", "a"]
    # binpack keeps its order: every node holds a replica, the fullest ("b") first
    packed = plan(snapshot, [request(2)]).placements
    assert [p.node_id for p in packed] == ["b", "b"]
