"""Reconcile: make the instances on this node match the assignments (see README.md).

:func:`plan_actions` is a pure diff of desired against observed. :class:`Executor`
observes the driver, plans, and applies the plan idempotently with per-instance
exponential backoff; it is level-triggered (the daemon calls it on every change and
periodically even without one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from shellwego.errors import ShellWeGoError
from shellwego.models.agentprotocol import Assignment, HealthCheckSpec
from shellwego.runtime.driver import Driver, InstanceSpec, InstanceState, InstanceStatus

log = logging.getLogger(__name__)

# the driver runs (or is restarting) these: nothing to start
ACTIVE = frozenset({InstanceState.STARTING, InstanceState.RUNNING, InstanceState.BACKOFF})
# these are not running: start them when desired, remove them when not
INACTIVE = frozenset({InstanceState.PENDING, InstanceState.STOPPED, InstanceState.EXITED})

ActionKind = Literal["start", "stop", "remove"]


HealthCheck = HealthCheckSpec


def instance_spec(assignment: Assignment) -> InstanceSpec:
    """What the driver of the assignment's runtime gets; its ``prepare`` fetches the
    artifact (see :class:`shellwego.runtime.drivers.DriverSet`)."""
    return InstanceSpec(
        instance_id=assignment.instance_id,
        app_id=assignment.app_id,
        app_name=assignment.app_name,
        process_type=assignment.process_type,
        release_id=assignment.release_id,
        command=assignment.command,
        app_dir=None,
        env=dict(assignment.env),
        port=assignment.network.port,
        memory_bytes=assignment.resources.memory_bytes,
        cpu_millis=assignment.resources.cpu_millis,
        runtime=assignment.runtime,
        uid=assignment.uid,
        index=assignment.index,
        artifact=assignment.artifact,
        argv=assignment.argv,
        pids=assignment.resources.pids,
    )


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    instance_id: str
    assignment: Assignment | None = field(default=None, repr=False)
    # what the driver reported when the plan was made (UNKNOWN: no record)
    observed: InstanceState = InstanceState.UNKNOWN


_ORDER: dict[str, int] = {"stop": 0, "remove": 1, "start": 2}


def plan_actions(desired: Sequence[Assignment], observed: Sequence[InstanceStatus]) -> list[Action]:
    """The actions that take ``observed`` to ``desired``; empty when they already match.

    - desired running, and not running/starting/backoff (absent, pending, stopped, or
      exited because the driver gave up restarting it) → start
    - running/starting/backoff and not desired, or desired ``stopped`` → stop
    - not desired at all and not running (or just stopped by this plan) → remove
    Stops come first (they free memory and CPU), then removes, then starts; each group
    in instance id order.
    """
    wanted = {a.instance_id: a for a in desired}
    seen = {s.instance_id: s for s in observed}
    actions: list[Action] = []
    for iid, status in seen.items():
        target = wanted.get(iid)
        running_wanted = target is not None and target.desired_state == "running"
        if status.state in ACTIVE and not running_wanted:
            actions.append(Action("stop", iid, target, status.state))
            if target is None:
                actions.append(Action("remove", iid, None, status.state))
        elif status.state in INACTIVE and target is None:
            actions.append(Action("remove", iid, None, status.state))
    for iid, target in wanted.items():
        if target.desired_state != "running":
            continue
        current = seen.get(iid)
        state = current.state if current is not None else InstanceState.UNKNOWN
        if state not in ACTIVE:
            actions.append(Action("start", iid, target, state))
    return sorted(actions, key=lambda a: (_ORDER[a.kind], a.instance_id))


@dataclass
class _Backoff:
    failures: int = 0
    last_failure: float = 0.0
    retry_at: float = 0.0
    pending: bool = False  # a start is deferred until retry_at
    error: str | None = None
    code: str | None = None  # the error's problem slug (e.g. ``port-in-use``)


class Executor:
    """Applies plans through a driver; one instance's failure never blocks another's.

    A failed start (or an instance the driver gave up on) is retried after
    ``base * 2^(failures-1)`` seconds, at most ``cap``; the count is forgotten after
    ``reset_after`` seconds without a failure.
    """

    def __init__(
        self,
        driver: Driver,
        *,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        reset_after: float = 60.0,
        concurrency: int = 8,
        stop_grace: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.driver = driver
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.reset_after = reset_after
        self.stop_grace = stop_grace
        self._clock = clock
        self._limit = asyncio.Semaphore(concurrency)
        self._backoff: dict[str, _Backoff] = {}
        self._restarts: dict[str, int] = {}
        # instances this executor has given their spec (and so their environment) to the
        # driver: one re-adopted after an agent restart gets it once (see ``_provide``)
        self._given: set[str] = set()
        self._lock = asyncio.Lock()

    # ---- what the heartbeat reports about instances the driver cannot ----------------------

    def failures(self) -> dict[str, tuple[int, str, str | None]]:
        """Instances whose last start failed: id → (failed attempts, last error, its
        problem slug)."""
        return {
            iid: (b.failures, b.error, b.code)
            for iid, b in self._backoff.items()
            if b.pending and b.error is not None
        }

    def restarts(self, instance_id: str) -> int:
        """How many times this agent started the instance again after the driver gave up."""
        return self._restarts.get(instance_id, 0)

    def next_retry_in(self) -> float | None:
        """Seconds until the earliest deferred start is due, or None when none is."""
        pending = [b.retry_at for b in self._backoff.values() if b.pending]
        if not pending:
            return None
        return max(0.0, min(pending) - self._clock())

    # ---- the pass ------------------------------------------------------------------------

    async def apply(self, desired: Sequence[Assignment]) -> list[Action]:
        """Observe, plan, execute; returns the actions that succeeded."""
        async with self._lock:
            observed = await self.driver.list()
            plan = plan_actions(desired, observed)
            self._forget(desired, observed)
            await self._provide(desired, observed)
            by_instance: dict[str, list[Action]] = {}
            for action in plan:
                by_instance.setdefault(action.instance_id, []).append(action)
            results = await asyncio.gather(
                *(self._run_chain(chain) for chain in by_instance.values())
            )
            done = [a for chain in results for a in chain]
            return sorted(done, key=lambda a: (_ORDER[a.kind], a.instance_id))

    async def _provide(
        self, desired: Sequence[Assignment], observed: Sequence[InstanceStatus]
    ) -> None:
        """Hand the spec of every running instance the driver re-adopted to it once: the
        driver keeps an instance's environment in memory only, so after an agent restart
        it has none until the control plane's assignments bring it again."""
        active = {s.instance_id for s in observed if s.state in ACTIVE}
        for assignment in desired:
            iid = assignment.instance_id
            if iid in self._given or iid not in active or assignment.desired_state != "running":
                continue
            try:
                await self.driver.prepare(instance_spec(assignment))
            except (ShellWeGoError, OSError) as exc:
                log.warning("cannot hand instance %s its configuration: %s", iid, exc)
                continue
            self._given.add(iid)

    def _forget(self, desired: Sequence[Assignment], observed: Sequence[InstanceStatus]) -> None:
        keep = {a.instance_id for a in desired} | {s.instance_id for s in observed}
        self._given &= keep
        for iid in list(self._backoff):
            if iid not in keep:
                del self._backoff[iid]
        for iid in list(self._restarts):
            if iid not in keep:
                del self._restarts[iid]

    async def _run_chain(self, chain: list[Action]) -> list[Action]:
        done: list[Action] = []
        async with self._limit:
            for action in chain:
                try:
                    ok = await self._run(action)
                except ShellWeGoError as exc:
                    self._failed(action, exc.detail, exc.slug)
                    break
                except OSError as exc:
                    self._failed(action, f"{type(exc).__name__}: {exc.strerror or exc}")
                    break
                if not ok:
                    break
                done.append(action)
        return done

    async def _run(self, action: Action) -> bool:
        iid = action.instance_id
        if action.kind == "stop":
            await self.driver.stop(iid, grace_seconds=self.stop_grace)
            log.info("stopped instance %s", iid)
            return True
        if action.kind == "remove":
            await self.driver.remove(iid)
            self._backoff.pop(iid, None)
            log.info("removed instance %s", iid)
            return True
        assignment = action.assignment
        assert assignment is not None
        now = self._clock()
        backoff = self._backoff.get(iid)
        if backoff is not None and now - backoff.last_failure > self.reset_after:
            del self._backoff[iid]
            backoff = None
        if action.observed == InstanceState.EXITED and (backoff is None or not backoff.pending):
            # the runtime gave up on it: a failure too, so a crash loop backs off
            backoff = self._note_failure(iid, "exited; the runtime stopped restarting it")
        if backoff is not None and backoff.pending and now < backoff.retry_at:
            return False
        spec = instance_spec(assignment)
        await self.driver.prepare(spec)
        await self.driver.start(spec)
        self._given.add(iid)
        if action.observed == InstanceState.EXITED:
            self._restarts[iid] = self._restarts.get(iid, 0) + 1
        if backoff is not None:
            # the count stays until ``reset_after`` passes, so repeated failures escalate
            backoff.pending = False
            backoff.error = backoff.code = None
        log.info(
            "started instance %s (%s %s v%d) on port %d",
            iid,
            assignment.app_name,
            assignment.process_type,
            assignment.release_version,
            assignment.port,
        )
        return True

    def _note_failure(self, instance_id: str, error: str, code: str | None = None) -> _Backoff:
        now = self._clock()
        backoff = self._backoff.setdefault(instance_id, _Backoff())
        backoff.failures += 1
        backoff.last_failure = now
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (backoff.failures - 1))
        backoff.retry_at = now + delay
        backoff.pending = True
        backoff.error = error
        backoff.code = code
        return backoff

    def _failed(self, action: Action, error: str, code: str | None = None) -> None:
        log.warning("could not %s instance %s: %s", action.kind, action.instance_id, error)
        if action.kind == "start":
            self._note_failure(action.instance_id, error, code)
