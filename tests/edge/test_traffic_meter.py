"""The traffic meter reads Caddy's access log incrementally, across rolls and partial lines."""

from __future__ import annotations

import json
from pathlib import Path

from shellwego.edge.metrics import TrafficMeter


def line(host: str, status: int, seconds: float) -> bytes:
    entry = {"request": {"host": host, "uri": "/"}, "status": status, "duration": seconds}
    return json.dumps(entry).encode() + b"\n"


def test_counts_new_lines_only_across_partial_writes_and_a_roll(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(line("blog.localhost", 200, 0.5))  # before the edge started: not counted
    meter = TrafficMeter(log)
    meter.learn(
        {"blog.localhost": "id-blog", "www.blog.example": "id-blog", "shop.localhost": "id-shop"}
    )
    meter.skip_existing()
    assert meter.figures("id-blog")["requests"] == 0

    with log.open("ab") as f:
        f.write(line("blog.localhost:8080", 200, 0.001))
        f.write(line("WWW.Blog.Example", 308, 0.002))
        half = line("shop.localhost", 503, 0.004)
        f.write(half[:10])  # Caddy is mid-write
    assert meter.figures("id-blog")["requests"] == 2
    assert meter.figures("id-shop")["requests"] == 0
    with log.open("ab") as f:
        f.write(half[10:])
        f.write(line("other.localhost", 200, 0.001))  # not an app: ignored
        f.write(line("blog.localhost", 404, 0.003))
    log.rename(tmp_path / "access-1.log")  # rolled; then Caddy writes a fresh file
    log.write_bytes(line("blog.localhost", 500, 0.010))

    blog = meter.figures("id-blog")
    assert blog == {
        "requests": 4,
        "status_2xx": 1,
        "status_3xx": 1,
        "status_4xx": 1,
        "status_5xx": 1,
        "latency_p50_ms": 3.0,
        "latency_p99_ms": 10.0,
    }
    assert meter.figures("id-shop")["status_5xx"] == 1
    assert meter.figures("id-blog") == blog  # nothing new: same figures


def test_requests_of_a_removed_route_still_count(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    meter = TrafficMeter(log)
    meter.skip_existing()  # no log yet
    meter.learn({"old.localhost": "id-blog"})
    log.write_bytes(line("old.localhost", 200, 0.001))
    meter.learn({"new.localhost": "id-blog"})  # the next table no longer has old.localhost
    with log.open("ab") as f:
        f.write(line("new.localhost", 200, 0.001))
    assert meter.figures("id-blog")["requests"] == 2
    assert meter.figures("id-blog")["latency_p50_ms"] == 1.0
