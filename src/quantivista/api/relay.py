"""The broker's bars and trades, relayed to this API process's WebSocket clients.

`qv stream` and `qv integrate` publish bar and trade batches to durable topics, often from
other processes or hosts. Each API process follows the topics in `api.relay_topics` from
their end (only new messages; no consumer group, so no state is left on the broker) and
hands every decoded batch to its `StreamHub`. A message that does not decode is counted
and skipped: one bad message never stops the feed.

A broker that can push (`follow`: NATS, an ordered push consumer per topic) hands messages
over as they arrive; the others are read every `poll_s` when idle. Pushed messages wait in
a bounded inbox; when the hub falls that far behind, the newest are dropped and counted
(the broker's connection is never held up by a slow relay).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from quantivista.bus.base import Broker, Message, StartAt
from quantivista.bus.codecs import Codecs
from quantivista.bus.events import Event
from quantivista.errors import QuantiVistaError

__all__ = ["BrokerRelay"]

_log = logging.getLogger(__name__)
_BATCH = 500  # messages read per topic and round
_INBOX = 10_000  # pushed messages waiting for the relay thread, at most


class BrokerRelay:
    """Follow broker topics on a thread and pass their events to `deliver`."""

    def __init__(
        self,
        broker: Broker,
        codecs: Codecs,
        deliver: Callable[[Event], None],
        topics: list[str],
        poll_s: float = 0.02,
    ) -> None:
        self.broker = broker
        self.codecs = codecs
        self.deliver = deliver
        self.topics = topics
        self.poll_s = poll_s
        self.relayed = 0
        self.undecodable = 0
        self.dropped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next: dict[str, int] = {}
        self._inbox: queue.Queue[Message] = queue.Queue(_INBOX)
        self._unfollow: list[Callable[[], None]] = []

    def start(self) -> None:
        """Start following from the current end of every topic."""
        for topic in self.topics:
            self.broker.create_topic(topic)
            self._next[topic] = self.broker.last_offset(topic) + 1
        follow = getattr(self.broker, "follow", None)
        if follow is not None:
            for topic in self.topics:
                self._unfollow.append(follow(topic, StartAt(offset=self._next[topic]), self._push))
        self._thread = threading.Thread(target=self._run, name="qv-ws-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following (waits for the current round)."""
        for unfollow in self._unfollow:
            unfollow()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _push(self, message: Message) -> None:
        try:
            self._inbox.put_nowait(message)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        if self._unfollow:
            while not self._stop.is_set():
                try:
                    self._relay(self._inbox.get(timeout=0.25))
                except queue.Empty:
                    continue
            return
        while not self._stop.is_set():
            try:
                moved = self.round()
            except QuantiVistaError as exc:  # the broker is away: try again shortly
                _log.warning("ws relay: %s", exc)
                moved = False
            if not moved:
                self._stop.wait(self.poll_s)

    def round(self) -> bool:
        """Read what arrived on every topic since the last round; say whether any did."""
        moved = False
        for topic in self.topics:
            start = StartAt(offset=self._next[topic])
            for message in self.broker.read(topic, start, limit=_BATCH):
                self._next[topic] = message.offset + 1
                moved = True
                self._relay(message)
        return moved

    def _relay(self, message: Message) -> None:
        try:
            event = self.codecs.decode(message.value, dict(message.headers))
        except QuantiVistaError:
            self.undecodable += 1
            return
        self.deliver(event)
        self.relayed += 1
