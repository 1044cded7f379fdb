"""Pure placement: a cluster snapshot and placement requests in, a plan out.

No I/O, no clock reads, no randomness; ties are broken by node id. See README.md.
"""

from .eligibility import eligible
from .planner import Planner, plan
from .types import (
    InstanceSnapshot,
    NodeSnapshot,
    Placement,
    PlacementRequest,
    Plan,
    Resources,
    Snapshot,
)

__all__ = [
    "InstanceSnapshot",
    "NodeSnapshot",
    "Placement",
    "PlacementRequest",
    "Plan",
    "Planner",
    "Resources",
    "Snapshot",
    "eligible",
    "plan",
]
