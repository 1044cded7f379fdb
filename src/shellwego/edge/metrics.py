"""Per-app traffic figures from Caddy's JSON access log.

The meter reads the log incrementally (from where it stopped), so calling it every second
costs only the new lines. Counts are cumulative since the edge started; latency
percentiles are over the most recent requests (up to ``window`` per app).
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(slots=True)
class AppTraffic:
    requests: int = 0
    status: dict[str, int] = field(default_factory=lambda: {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0})
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
    def __init__(self, path: Path, window: int = 2000) -> None:
        self.path = path
        self.window = window
        self.hosts: dict[str, str] = {}  # hostname → app name
        self.apps: dict[str, AppTraffic] = {}
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""

    def poll(self) -> None:
        """Read the lines written since the last call."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if st.st_ino != self._inode or st.st_size < self._offset:  # rolled or new file
            self._inode, self._offset, self._partial = st.st_ino, 0, b""
        if st.st_size == self._offset:
            return
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read(st.st_size - self._offset)
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._record(line)

    def _record(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
            host = str(entry["request"]["host"]).split(":")[0].lower()
            status = int(entry["status"])
            duration = float(entry["duration"])
        except (ValueError, KeyError, TypeError):
            return
        app = self.hosts.get(host)
        if app is None:
            return
        traffic = self.apps.get(app)
        if traffic is None:
            traffic = self.apps[app] = AppTraffic(latencies_ms=deque(maxlen=self.window))
        traffic.requests += 1
        bucket = f"{status // 100}xx"
        if bucket in traffic.status:
            traffic.status[bucket] += 1
        traffic.latencies_ms.append(duration * 1000.0)

    def figures(self, app_name: str) -> dict[str, Any]:
        self.poll()
        return (self.apps.get(app_name) or AppTraffic()).figures()


class HasMeter(Protocol):
    meter: TrafficMeter


async def traffic_for_app(caddy: HasMeter, app_name: str) -> dict[str, Any]:
    """requests, status_2xx…5xx (cumulative), latency_p50_ms / p99_ms (recent requests)."""
    return caddy.meter.figures(app_name)
