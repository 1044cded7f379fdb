"""Attacks on tenant isolation, each against real parts: fixtures of these tests."""

from support.hostile_build import sentinels, work  # noqa: F401  (fixtures)
from support.netns import networks  # noqa: F401  (a fixture)
from support.scratch_node import node, open_umask  # noqa: F401  (fixtures)
