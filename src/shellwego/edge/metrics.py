"""Per-app traffic figures from Caddy's JSON access log.

Caddy writes one JSON line per request to ``<data_dir>/access.log``. The meter keeps the
file open and reads only what was appended since its last call, so asking every second
costs the new lines only. When Caddy rolls the file, the meter finishes the old one and
continues with the new one.

Figures are kept per app id (an app keeps its figures when it is renamed or its domains
change). Request and status counts are cumulative since the edge supervisor started (lines written
before it started are skipped). Latency percentiles are over the most recent requests of
each app (up to ``window`` of them). Latency is Caddy's own measure: from reading the
request to writing the last byte of the response, including the time spent in the app.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


@dataclass(slots=True)
class AppTraffic:
    requests: int = 0
    status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_CLASSES, 0))
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)

        return {
            "requests": self.requests,
            "status_2xx": self.status["2xx"],
            "status_3xx": self.status["3xx"],
            "status_4xx": self.status["4xx"],
            "status_5xx": self.status["5xx"],
            "latency_p50_ms": pct(0.50),
            "latency_p99_ms": pct(0.99),
        }


class TrafficMeter:
    """Counts the requests of every app from Caddy's access log, incrementally."""

    def __init__(self, path: Path, window: int = 2000) -> None:
        self.path = path
        self.window = window
        self.hosts: dict[str, str] = {}  # hostname (lower case) → app id
        self.apps: dict[str, AppTraffic] = {}
        self._handle: IO[bytes] | None = None
        self._inode: int | None = None
        self._partial = b""

    def learn(self, hosts: dict[str, str]) -> None:
        """Add the hostnames of a new route table (earlier names stay known, so requests
        logged just before a route was removed still count for their app)."""
        self.hosts.update(hosts)

    def skip_existing(self) -> None:
        """Start counting from the current end of the log."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            handle = self.path.open("rb")
            handle.seek(0, os.SEEK_END)
            self._handle, self._inode = handle, os.fstat(handle.fileno()).st_ino

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle, self._inode, self._partial = None, None, b""

    def poll(self) -> None:
        """Read the lines written since the last call."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if self._handle is not None:
            self._consume(self._handle.read())
            if inode == self._inode:
                return
            self.close()  # rolled: the old file is finished, go on with the new one
        if inode is None:
            return
        try:
            self._handle = self.path.open("rb")
        except FileNotFoundError:
            return
        self._inode = os.fstat(self._handle.fileno()).st_ino
        self._consume(self._handle.read())

    def _consume(self, chunk: bytes) -> None:
        if not chunk:
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._record(line)

    def _record(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
            host = _hostname(str(entry["request"]["host"]))
            status = int(entry["status"])
            duration = float(entry["duration"])
        except (ValueError, KeyError, TypeError):
            return
        app_id = self.hosts.get(host)
        if app_id is None:
            return
        traffic = self.apps.get(app_id)
        if traffic is None:
            traffic = self.apps[app_id] = AppTraffic(latencies_ms=deque(maxlen=self.window))
        traffic.requests += 1
        bucket = f"{status // 100}xx"
        if bucket in traffic.status:
            traffic.status[bucket] += 1
        traffic.latencies_ms.append(duration * 1000.0)

    def figures(self, app_id: str) -> dict[str, Any]:
        self.poll()
        return (self.apps.get(app_id) or AppTraffic()).figures()


def _hostname(host: str) -> str:
    """The Host header without its port, lower case ("[::1]:80" → "[::1]")."""
    if host.startswith("["):
        return host[: host.find("]") + 1].lower()
    return host.split(":", 1)[0].lower()


class HasMeter(Protocol):
    meter: TrafficMeter


async def traffic_for_app(caddy: HasMeter, app_id: str) -> dict[str, Any]:
    """requests and status_2xx…status_5xx (cumulative since the edge supervisor started),
    latency_p50_ms and latency_p99_ms (over the app's most recent requests; None before
    its first request), of the app with id ``app_id``."""
    return caddy.meter.figures(app_id)
