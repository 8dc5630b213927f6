"""The event-bus contract shared by the in-memory, NATS and Kafka backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from quantivista.bus.events import Event

__all__ = ["EventBus", "Handler", "topic_matches"]

Handler = Callable[[Event], None]


def topic_matches(pattern: str, topic: str) -> bool:
    """Match NATS-style: `*` is one token, `>` the rest (`bars.*`, `bars.>`, `>`)."""
    p_parts, t_parts = pattern.split("."), topic.split(".")
    for i, part in enumerate(p_parts):
        if part == ">":
            return len(t_parts) > i
        if i >= len(t_parts) or (part != "*" and part != t_parts[i]):
            return False
    return len(p_parts) == len(t_parts)


class EventBus(Protocol):
    """Publish events; subscribers get them by topic pattern."""

    def publish(self, event: Event) -> None:
        """Deliver `event` to every subscriber whose pattern matches its topic."""
        ...

    def subscribe(self, pattern: str, handler: Handler, *, name: str | None = None) -> str:
        """Register `handler` for topics matching `pattern`; return a subscription id."""
        ...

    def unsubscribe(self, subscription_id: str) -> None:
        """Stop a subscription."""
        ...
