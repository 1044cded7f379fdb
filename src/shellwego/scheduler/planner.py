"""Placement planning: a snapshot and requests in, a plan out.

Pure: no I/O, no clock, no randomness. Every choice is a total order ending in the node id,
so the same input always gives the same plan. See README.md beside this file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush

from shellwego.errors import CapacityError, InvalidInput, NotFound

from .eligibility import eligible
from .types import (
    NodeSnapshot,
    Placement,
    PlacementRequest,
    Plan,
    Resources,
    Snapshot,
)
from .units import human_cpu, human_memory

_Eligibility = tuple[str, tuple[tuple[str, str], ...]]
_IndexKey = tuple[str, str, str, tuple[tuple[str, str], ...], str, int, int]


def _eligibility(runtime: str, constraints: Mapping[str, str]) -> _Eligibility:
    return runtime, tuple(sorted(constraints.items()))


def _index_key(request: PlacementRequest) -> _IndexKey:
    runtime, constraints = _eligibility(request.runtime, request.constraints)
    return (
        request.app_id,
        request.process_type,
        runtime,
        constraints,
        request.strategy,
        request.resources.cpu_millis,
        request.resources.memory_bytes,
    )


@dataclass(slots=True)
class _Index:
    """Candidate nodes for one kind of request, best first.

    Only nodes that are eligible and still fit one instance are present. ``fresh`` holds
    nodes without a replica of the request's app and process type, ``used`` the others;
    both are min-heaps of integer keys that encode (strategy order, node rank).
    """

    cpu: int
    memory: int
    spread: bool
    group: set[int]
    peers: list[int]  # per node rank: the group's peers there (spread orders by these first)
    fresh: list[int] = field(default_factory=list)
    used: list[int] = field(default_factory=list)


class Planner:
    """Places requests one after another against an in-memory copy of a snapshot.

    Capacity taken by earlier placements is remembered, so successive ``place`` calls never
    overcommit a node. A call that cannot place all its instances raises
    :class:`CapacityError` and leaves the planner as it was before the call.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        nodes = sorted(snapshot.nodes, key=lambda node: node.id)
        self._nodes: list[NodeSnapshot] = nodes
        self._rank: dict[str, int] = {node.id: rank for rank, node in enumerate(nodes)}
        if len(self._rank) != len(nodes):
            raise InvalidInput("the snapshot lists a node id more than once")
        self._free_cpu = [node.allocatable.cpu_millis for node in nodes]
        self._free_memory = [node.allocatable.memory_bytes for node in nodes]
        # Key spans: every key is ((memory part) * cpu_span + cpu part) * node_count + rank.
        self._count = max(len(nodes), 1)
        self._cpu_span = max([node.allocatable.cpu_millis for node in nodes] + [0]) + 1
        self._memory_span = max([node.allocatable.memory_bytes for node in nodes] + [0]) + 1
        self._groups: dict[tuple[str, str], set[int]] = {}
        self._peers: dict[tuple[str, str], list[int]] = {}
        for instance in snapshot.instances:
            rank = self._rank.get(instance.node_id)
            if rank is None:
                continue
            self._free_cpu[rank] -= instance.resources.cpu_millis
            self._free_memory[rank] -= instance.resources.memory_bytes
            self._group(instance.app_id, instance.process_type).add(rank)
            self._peer_counts(instance.app_id, instance.process_type)[rank] += instance.peers
        self._eligible: dict[_Eligibility, list[int]] = {}
        self._cached: tuple[_IndexKey, _Index] | None = None
        self._placements: list[Placement] = []

    @property
    def placements(self) -> list[Placement]:
        """Every placement made so far, in the order they were made."""
        return list(self._placements)

    def free(self, node_id: str) -> Resources:
        """What ``node_id`` has left after existing instances and placements so far."""
        rank = self._rank.get(node_id)
        if rank is None:
            raise NotFound(f"node {node_id} is not in the snapshot")
        return Resources(self._free_cpu[rank], self._free_memory[rank])

    def place(self, request: PlacementRequest) -> list[Placement]:
        """Place ``request.count`` instances, all of them or none."""
        made, error = self._take(request, whole=True)
        if error is not None:
            raise error
        return made

    def place_most(self, request: PlacementRequest) -> tuple[list[Placement], CapacityError | None]:
        """Place as many of ``request.count`` instances as fit, on the nodes ``place`` would
        choose: the placements, and why not all of them (``None`` when all fit)."""
        return self._take(request, whole=False)

    def _take(
        self, request: PlacementRequest, *, whole: bool
    ) -> tuple[list[Placement], CapacityError | None]:
        if request.count == 0:
            return [], None
        key = _index_key(request)
        index = self._index(key, request)
        fresh, used, group, peers = index.fresh, index.used, index.group, index.peers
        free_cpu, free_memory = self._free_cpu, self._free_memory
        cpu, memory = index.cpu, index.memory
        count, cpu_span, memory_span = self._count, self._cpu_span, self._memory_span
        spread = index.spread
        peer_span = (memory_span + 1) * cpu_span  # above any spread order of one peer count
        chosen: list[int] = []
        joined: list[int] = []
        error: CapacityError | None = None
        for _ in range(request.count):
            if fresh:
                rank = heappop(fresh) % count
                group.add(rank)
                joined.append(rank)
            elif used:
                rank = heappop(used) % count
            else:
                error = self._capacity_error(request, len(chosen), cpu, memory)
                if whole:
                    self._rollback(chosen, joined, group, peers, cpu, memory)
                    return [], error
                break
            chosen.append(rank)
            peers[rank] += 1
            left_cpu = free_cpu[rank] - cpu
            left_memory = free_memory[rank] - memory
            free_cpu[rank] = left_cpu
            free_memory[rank] = left_memory
            if left_cpu >= cpu and left_memory >= memory:
                if spread:
                    order = (
                        peers[rank] * peer_span
                        + (memory_span - left_memory) * cpu_span
                        + (cpu_span - 1 - left_cpu)
                    )
                else:
                    order = left_memory * cpu_span + left_cpu
                heappush(used, order * count + rank)
        self._cached = (key, index)
        nodes = self._nodes
        made = [
            Placement(
                node_id=nodes[rank].id,
                app_id=request.app_id,
                process_type=request.process_type,
                release_id=request.release_id,
                resources=request.resources,
            )
            for rank in chosen
        ]
        self._placements.extend(made)
        return made, error

    def _group(self, app_id: str, process_type: str) -> set[int]:
        group = self._groups.get((app_id, process_type))
        if group is None:
            group = self._groups[(app_id, process_type)] = set()
        return group

    def _peer_counts(self, app_id: str, process_type: str) -> list[int]:
        peers = self._peers.get((app_id, process_type))
        if peers is None:
            peers = self._peers[(app_id, process_type)] = [0] * len(self._nodes)
        return peers

    def _eligible_nodes(self, runtime: str, constraints: Mapping[str, str]) -> list[int]:
        """Ranks of ready nodes that offer ``runtime`` and carry every constraint label."""
        key = _eligibility(runtime, constraints)
        ranks = self._eligible.get(key)
        if ranks is None:
            ranks = [
                rank
                for rank, node in enumerate(self._nodes)
                if eligible(node, runtime, constraints)
            ]
            self._eligible[key] = ranks
        return ranks

    def _index(self, key: _IndexKey, request: PlacementRequest) -> _Index:
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        self._cached = None
        cpu = request.resources.cpu_millis
        memory = request.resources.memory_bytes
        spread = request.strategy == "spread"
        group = self._group(request.app_id, request.process_type)
        peers = self._peer_counts(request.app_id, request.process_type)
        index = _Index(cpu=cpu, memory=memory, spread=spread, group=group, peers=peers)
        free_cpu, free_memory = self._free_cpu, self._free_memory
        count, cpu_span, memory_span = self._count, self._cpu_span, self._memory_span
        for rank in self._eligible_nodes(request.runtime, request.constraints):
            left_cpu = free_cpu[rank]
            left_memory = free_memory[rank]
            if left_cpu < cpu or left_memory < memory:
                continue
            if spread:
                order = (
                    peers[rank] * (memory_span + 1) * cpu_span
                    + (memory_span - left_memory) * cpu_span
                    + (cpu_span - 1 - left_cpu)
                )
            else:
                order = left_memory * cpu_span + left_cpu
            (index.used if rank in group else index.fresh).append(order * count + rank)
        heapify(index.fresh)
        heapify(index.used)
        return index

    def _rollback(
        self,
        chosen: list[int],
        joined: list[int],
        group: set[int],
        peers: list[int],
        cpu: int,
        memory: int,
    ) -> None:
        """Undo a partly placed request: give the capacity back, forget new replicas."""
        self._cached = None
        for rank in chosen:
            self._free_cpu[rank] += cpu
            self._free_memory[rank] += memory
            peers[rank] -= 1
        group.difference_update(joined)

    def _capacity_error(
        self, request: PlacementRequest, placed: int, cpu: int, memory: int
    ) -> CapacityError:
        eligible = self._eligible_nodes(request.runtime, request.constraints)
        asked = (
            f"cannot place {request.count} instance{'s' if request.count != 1 else ''} of "
            f"app {request.app_id} process {request.process_type} "
            f"({human_cpu(cpu)} and {human_memory(memory)} each)"
        )
        extra: dict[str, object] = {
            "app_id": request.app_id,
            "process_type": request.process_type,
            "count": request.count,
            "cpu_millis": cpu,
            "memory_bytes": memory,
            "placeable": placed,
            "eligible_nodes": len(eligible),
        }
        if not eligible:
            rules = [f"is ready and offers runtime {request.runtime!r}"]
            rules += [f"{label}={value}" for label, value in sorted(request.constraints.items())]
            detail = f"{asked}: no node {' and matches '.join(rules)}"
            return CapacityError(detail, **extra)
        # The node with the most free memory, then CPU, then the lowest id: the largest slot.
        slot = max(
            eligible, key=lambda rank: (self._free_memory[rank], self._free_cpu[rank], -rank)
        )
        slot_cpu = max(self._free_cpu[slot], 0)
        slot_memory = max(self._free_memory[slot], 0)
        most_cpu = max(max(self._free_cpu[rank] for rank in eligible), 0)
        extra.update(largest_free_cpu_millis=slot_cpu, largest_free_memory_bytes=slot_memory)
        nodes = f"{len(eligible)} eligible node{'s' if len(eligible) != 1 else ''}"
        detail = (
            f"{asked}: {f'only {placed}' if placed else 'none'} fit on the {nodes}; "
            f"the largest free slot left is "
            f"{human_cpu(slot_cpu)} and {human_memory(slot_memory)} "
            f"(on {self._nodes[slot].id})"
        )
        if most_cpu > slot_cpu:
            detail += f", the most free CPU on any of them is {human_cpu(most_cpu)}"
        return CapacityError(detail, **extra)


def _ordered(requests: Sequence[PlacementRequest]) -> list[int]:
    """Largest instances first (first-fit decreasing), identical requests side by side."""
    first_seen: dict[_IndexKey, int] = {}
    for position, request in enumerate(requests):
        first_seen.setdefault(_index_key(request), position)

    def order(position: int) -> tuple[int, int, int, int]:
        request = requests[position]
        return (
            -request.resources.memory_bytes,
            -request.resources.cpu_millis,
            first_seen[_index_key(request)],
            position,
        )

    return sorted(range(len(requests)), key=order)


def _place_all(planner: Planner, requests: Sequence[PlacementRequest]) -> list[list[Placement]]:
    made: list[list[Placement]] = [[] for _ in requests]
    for position in _ordered(requests):
        made[position] = planner.place(requests[position])
    return made


def plan(snapshot: Snapshot, requests: Sequence[PlacementRequest]) -> Plan:
    """Place every requested instance, or raise :class:`CapacityError` and place nothing.

    Placements come back in request order. Larger instances are placed first, which packs
    tighter than the order the requests were given in.
    """
    made = _place_all(Planner(snapshot), requests)
    return Plan(placements=[placement for group in made for placement in group])
