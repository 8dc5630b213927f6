"""The in-process bus: synchronous delivery, failures to a dead-letter sink."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from quantivista.bus.base import Handler, topic_matches
from quantivista.bus.envelope import Envelope
from quantivista.bus.events import Event

__all__ = ["DeadLetterSink", "InMemoryBus"]

log = logging.getLogger(__name__)

DeadLetterSink = Callable[[str, dict[str, Any], str, str | None], None]


@dataclass(slots=True)
class _Subscription:
    sid: str
    pattern: str
    handler: Handler
    name: str


class InMemoryBus:
    """Deliver events to subscribers in this process, in publish order.

    A handler that raises does not stop delivery to the others: the event, the error and
    the handler's name go to the dead-letter sink (the catalog, on a platform).
    """

    def __init__(self, dead_letters: DeadLetterSink | None = None) -> None:
        self._subs: dict[str, _Subscription] = {}
        self._lock = threading.Lock()
        self._dead_letters = dead_letters
        # without a sink, failed deliveries stay here rather than vanish
        self.dead_letters: list[dict[str, Any]] = []
        self.published = 0
        self.failed = 0

    def subscribe(self, pattern: str, handler: Handler, *, name: str | None = None) -> str:
        sid = uuid4().hex
        label = name or str(getattr(handler, "__qualname__", repr(handler)))
        with self._lock:
            self._subs[sid] = _Subscription(sid, pattern, handler, label)
        return sid

    def unsubscribe(self, subscription_id: str) -> None:
        with self._lock:
            self._subs.pop(subscription_id, None)

    def publish(self, event: Event) -> None:
        with self._lock:
            targets = [s for s in self._subs.values() if topic_matches(s.pattern, event.topic)]
            self.published += 1
        for sub in targets:
            try:
                sub.handler(event)
            except Exception as exc:  # a consumer's bug must not lose the event
                self.failed += 1
                log.warning("handler %s failed on %s: %s", sub.name, event.topic, exc)
                payload = Envelope.of(event).model_dump(mode="json")  # replayable as is
                error = f"{type(exc).__name__}: {exc}"
                if self._dead_letters is not None:
                    self._dead_letters(event.topic, payload, error, sub.name)
                else:
                    self.dead_letters.append(
                        {
                            "topic": event.topic,
                            "payload": payload,
                            "error": error,
                            "handler": sub.name,
                        }
                    )
