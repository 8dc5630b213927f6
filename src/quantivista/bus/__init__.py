"""Event distribution: the in-process bus, the broker contract and its backends, codecs."""

from quantivista.bus.base import (
    Broker,
    EventBus,
    Handler,
    Message,
    StartAt,
    Subscription,
    topic_matches,
)
from quantivista.bus.codecs import Codecs
from quantivista.bus.connect import open_broker
from quantivista.bus.events import (
    ActionsBatch,
    ActionsIngested,
    BarBatch,
    BarsIngested,
    BarsQuarantined,
    Event,
    TradesBatch,
)
from quantivista.bus.memory import InMemoryBus
from quantivista.bus.memory_broker import MemoryBroker
from quantivista.bus.registry import SchemaCompatibilityError, SchemaRegistry

__all__ = [
    "ActionsBatch",
    "ActionsIngested",
    "BarBatch",
    "BarsIngested",
    "BarsQuarantined",
    "Broker",
    "Codecs",
    "Event",
    "EventBus",
    "Handler",
    "InMemoryBus",
    "MemoryBroker",
    "Message",
    "SchemaCompatibilityError",
    "SchemaRegistry",
    "StartAt",
    "Subscription",
    "TradesBatch",
    "open_broker",
    "topic_matches",
]
