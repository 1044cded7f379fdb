"""Wake-ups between replicas and agents: in-process, or NATS when ``NATS_URL`` is set."""

from .base import Bus, Subscription, wait_until
from .memo import TopicMemo
from .memory import MemoryBus
from .nats import NatsBus


def make_bus(nats_url: str | None) -> Bus:
    return NatsBus(nats_url) if nats_url else MemoryBus()


__all__ = ["Bus", "MemoryBus", "NatsBus", "Subscription", "TopicMemo", "make_bus", "wait_until"]
