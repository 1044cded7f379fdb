"""A cluster as an operator runs one: two `shellwego server` replicas (one PostgreSQL
database, NATS, an S3 bucket as the shared artifact store), two agents each in a network
namespace of its own, an edge node that knows both replicas, and an app at web=2 spread
over both nodes (tests/support/cluster.py). Then:

(a) replica A is killed (-9) under load through the edge: no request fails, the agents
    and the edge move to B, and a config change through B rolls out;
(b) an agent is killed (-9): its instance is replaced on the other node, healthy;
(c) the other node's link is cut: the edge stops routing to it, and no request fails
    after that.

Root only (network namespaces). Timings are printed, not asserted (each step has a
generous failure deadline): bench/cluster_failover.py measures them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cluster import Cluster, failovers, postgres_database, s3_bucket
from support.netns import network_tools_missing

from .conftest import EXAMPLES, platform_env


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    reason = network_tools_missing()
    if reason is not None:
        pytest.skip(f"the cluster test puts its agents in network namespaces: {reason}")
    with postgres_database() as database, s3_bucket() as s3:
        made = Cluster(tmp_path, platform_env(tmp_path, "33000-33999"), database, s3)
        try:
            yield made
        finally:
            made.close()


def test_a_cluster_survives_a_replica_an_agent_and_a_link(cluster: Cluster) -> None:
    figures = failovers(cluster, "duo", EXAMPLES / "web-worker")
    print("\n" + figures.report())
    assert figures.replica_kill.total > 0
    assert figures.replica_kill.failed == 0, figures.replica_kill.summary()
    served = " ".join(figures.replica_kill.answers)
    assert "says hi" in served and "says again" in served  # both releases, in turn
    assert figures.after_cut.total > 0
    assert figures.after_cut.failed == 0, figures.after_cut.summary()
    for name in ("node-1", "node-2", "edge"):
        assert cluster.join not in cluster.logs(name)
        assert "switching to" in cluster.logs(name)
