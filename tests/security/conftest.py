"""Attacks on tenant isolation, each against real parts."""

from support.scratch_node import node, open_umask  # noqa: F401  (fixtures of these tests)
