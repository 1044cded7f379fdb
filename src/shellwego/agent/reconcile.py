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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shellwego.errors import InvalidInput, ShellWeGoError
from shellwego.runtime.driver import Driver, InstanceSpec, InstanceState, InstanceStatus

log = logging.getLogger(__name__)

# the driver runs (or is restarting) these: nothing to start
ACTIVE = frozenset({InstanceState.STARTING, InstanceState.RUNNING, InstanceState.BACKOFF})
# these are not running: start them when desired, remove them when not
INACTIVE = frozenset({InstanceState.PENDING, InstanceState.STOPPED, InstanceState.EXITED})

ActionKind = Literal["start", "stop", "remove"]


@dataclass(frozen=True, slots=True)
class HealthCheck:
    type: Literal["http", "tcp", "process"]
    path: str = "/"
    timeout_seconds: float = 30.0

    @classmethod
    def parse(cls, raw: object) -> HealthCheck:
        if raw is None:
            return cls(type="process")
        if not isinstance(raw, Mapping):
            raise InvalidInput("health_check must be an object")
        kind = raw.get("type", "process")
        if kind not in ("http", "tcp", "process"):
            raise InvalidInput(f"unknown health check type {kind!r}")
        path = raw.get("path") or "/"
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidInput("health_check.path must start with /")
        timeout = raw.get("timeout_seconds", 30.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool):
            raise InvalidInput("health_check.timeout_seconds must be a number")
        return cls(type=kind, path=path, timeout_seconds=float(timeout))


def _text(raw: Mapping[str, Any], key: str, *, optional: bool = False) -> str:
    value = raw.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"assignment field {key!r} must be a string")
    return value


def _int(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"assignment field {key!r} must be an integer")
    return value


@dataclass(frozen=True, slots=True)
class Assignment:
    """One instance the control plane wants on this node (one item of the protocol).

    An instance id belongs to one release for its whole life: a new release, size or
    command always comes as new instance ids, so an assignment never changes under an
    id and the diff never has to restart an instance in place.
    """

    instance_id: str
    app_id: str
    app_name: str
    process_type: str
    release_id: str
    release_version: int
    slug_digest: str | None
    command: str
    env: Mapping[str, str] = field(repr=False)  # carries secrets: never printed
    port: int
    memory_bytes: int
    cpu_millis: int
    health_check: HealthCheck
    desired_state: Literal["running", "stopped"] = "running"
    uid: int | None = None  # the app's own uid (and gid), which its instances run as
    index: int | None = None  # its number within its process type (``DYNO=web.1``)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Assignment:
        env = raw.get("env") or {}
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise InvalidInput("assignment field 'env' must map names to strings")
        desired = raw.get("desired_state", "running")
        if desired not in ("running", "stopped"):
            raise InvalidInput(f"unknown desired_state {desired!r}")
        digest = raw.get("slug_digest")
        if digest is not None and not isinstance(digest, str):
            raise InvalidInput("assignment field 'slug_digest' must be a string")
        uid = raw.get("uid")
        if uid is not None and (not isinstance(uid, int) or isinstance(uid, bool) or uid < 1):
            raise InvalidInput("assignment field 'uid' must be a positive integer")
        index = raw.get("index")
        if index is not None and (
            not isinstance(index, int) or isinstance(index, bool) or index < 1
        ):
            raise InvalidInput("assignment field 'index' must be a positive integer")
        return cls(
            instance_id=_text(raw, "instance_id"),
            app_id=_text(raw, "app_id"),
            app_name=_text(raw, "app_name"),
            process_type=_text(raw, "process_type"),
            release_id=_text(raw, "release_id"),
            release_version=_int(raw, "release_version"),
            slug_digest=digest or None,
            command=_text(raw, "command", optional=True),
            env=dict(env),
            port=_int(raw, "port"),
            memory_bytes=_int(raw, "memory_bytes"),
            cpu_millis=_int(raw, "cpu_millis"),
            health_check=HealthCheck.parse(raw.get("health_check")),
            desired_state=desired,
            uid=uid,
            index=index,
        )

    def spec(self, app_dir: Path, runtime: str) -> InstanceSpec:
        return InstanceSpec(
            instance_id=self.instance_id,
            app_id=self.app_id,
            app_name=self.app_name,
            process_type=self.process_type,
            release_id=self.release_id,
            command=self.command,
            app_dir=app_dir,
            env=dict(self.env),
            port=self.port,
            memory_bytes=self.memory_bytes,
            cpu_millis=self.cpu_millis,
            runtime=runtime,
            uid=self.uid,
            index=self.index,
        )


def parse_assignments(items: Sequence[Mapping[str, Any]]) -> tuple[list[Assignment], list[str]]:
    """Parse the protocol's list; malformed items are skipped and described in the errors."""
    good: list[Assignment] = []
    errors: list[str] = []
    for item in items:
        try:
            good.append(Assignment.parse(item))
        except InvalidInput as exc:
            ident = item.get("instance_id") if isinstance(item, Mapping) else None
            errors.append(f"assignment {ident!r}: {exc.detail}")
    return good, errors


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


AppDirFor = Callable[[Assignment], Awaitable[Path]]


class Executor:
    """Applies plans through a driver; one instance's failure never blocks another's.

    A failed start (or an instance the driver gave up on) is retried after
    ``base * 2^(failures-1)`` seconds, at most ``cap``; the count is forgotten after
    ``reset_after`` seconds without a failure.
    """

    def __init__(
        self,
        driver: Driver,
        app_dir_for: AppDirFor,
        *,
        runtime: str,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        reset_after: float = 60.0,
        concurrency: int = 8,
        stop_grace: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.driver = driver
        self.app_dir_for = app_dir_for
        self.runtime = runtime
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
                app_dir = await self.app_dir_for(assignment)
                await self.driver.prepare(assignment.spec(app_dir, self.runtime))
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
        app_dir = await self.app_dir_for(assignment)
        spec = assignment.spec(app_dir, self.runtime)
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
