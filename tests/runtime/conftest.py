"""Real ProcessDrivers on a scratch node (tests/support/scratch_node.py), and node
networks (tests/support/netns.py)."""

from support.netns import networks  # noqa: F401  (a fixture)
from support.scratch_node import (  # noqa: F401  (fixtures and helpers of these tests)
    Node,
    node,
    open_umask,
    wait_http,
    wait_until,
)
