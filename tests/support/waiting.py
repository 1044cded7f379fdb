"""How wake-up tests wait without wall-clock assertions.

A loop or blocking query under a wake-up test is set to poll only every :data:`POLL`
seconds; what it does within :data:`PROMPTLY` (half of that) can only come from a wake-up,
however loaded the machine is. Timings themselves belong in ``bench/``.
"""

from __future__ import annotations

POLL = 60.0
PROMPTLY = POLL / 2
