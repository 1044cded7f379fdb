"""Fixtures of the security tests."""

from support.netns import networks  # noqa: F401  (a fixture)
