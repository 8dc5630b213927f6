"""Event distribution: the bus contract, events and the in-process backend."""

from quantivista.bus.base import EventBus, Handler, topic_matches
from quantivista.bus.events import ActionsIngested, BarsIngested, BarsQuarantined, Event
from quantivista.bus.memory import InMemoryBus

__all__ = [
    "ActionsIngested",
    "BarsIngested",
    "BarsQuarantined",
    "Event",
    "EventBus",
    "Handler",
    "InMemoryBus",
    "topic_matches",
]
