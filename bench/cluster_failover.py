"""How a cluster rides out a dead replica, a dead agent and a cut link.

The cluster of tests/e2e/test_cluster.py (tests/support/cluster.py): two `shellwego
server` replicas on one PostgreSQL database, NATS and a local S3 server (moto) as the
artifact store, two agents each in a network namespace of its own, an edge node that
knows both replicas, and an app (examples/web-worker) at web=2 spread over both nodes.
Default settings throughout (a node is declared down after 15 s without a heartbeat).
For each round it prints:

- replica kill -9 under a steady load through the edge (2 keep-alive clients): the
  requests that failed, and when each agent and the edge switched to the other replica
  (from the kill, by the timestamp of their "switching to" log line);
- agent kill -9: the time until both web instances are healthy on the other node (ps
  polled through the CLI, ~0.5 s apart), and until the edge stopped routing to it;
- a cut link (the node's veth down): the time until the edge stopped routing to the
  node, until the replacements were healthy, and a 5 s load after that.

Root only. Needs PostgreSQL (SHELLWEGO_TEST_PG_URL, default
postgresql://postgres@127.0.0.1:5432/postgres) and NATS (SHELLWEGO_TEST_NATS_URL).

Run: .venv/bin/python bench/cluster_failover.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from e2e.conftest import EXAMPLES, platform_env
from support.cluster import Cluster, failovers, postgres_database, s3_bucket
from support.netns import network_tools_missing


def one_round(number: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="swg-cluster-bench-") as home,
        postgres_database() as database,
        s3_bucket() as s3,
    ):
        cluster = Cluster(Path(home), platform_env(Path(home), "33000-33999"), database, s3)
        try:
            figures = failovers(cluster, "duo", EXAMPLES / "web-worker")
        finally:
            cluster.close()
    print(f"round {number}:")
    print("  " + figures.report().replace("\n", "\n  "), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    reason = network_tools_missing()
    if reason is not None:
        raise SystemExit(f"cluster_failover: {reason}")
    print(f"cores: {os.cpu_count()}")
    for n in range(1, args.rounds + 1):
        one_round(n)


if __name__ == "__main__":
    main()
