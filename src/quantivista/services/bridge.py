"""Feed a process's in-process bus from broker topics (the API's WebSocket fan-out hears
`qv stream` running elsewhere).

    bars.raw.1m     BarBatch         -> BarsStreamed (rows of the Arrow batch; corrections kept)
    quality.alerts  BarsQuarantined  -> BarsQuarantined

Each process joins with a group of its own starting at the newest message (a fan-out, not a
work queue): every API process sees every bar from when it started.
"""

from __future__ import annotations

import logging
import threading
from uuid import uuid4

import polars as pl

from quantivista.bus.base import Broker, EventBus, StartAt, Subscription
from quantivista.bus.codecs import Codecs
from quantivista.bus.events import BarBatch, BarsQuarantined, BarsStreamed, Event
from quantivista.bus.frames import from_ipc
from quantivista.bus.publisher import Publisher
from quantivista.bus.topics import QUALITY_ALERTS, raw_bars
from quantivista.errors import QuantiVistaError

__all__ = ["BrokerBridge"]

log = logging.getLogger(__name__)
_FIELDS = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "vwap")


class BrokerBridge:
    """Subscribe to broker topics on a thread; publish what arrives on the in-process bus."""

    def __init__(
        self,
        broker: Broker,
        codecs: Codecs,
        bus: EventBus,
        topics: tuple[str, ...] = (raw_bars("1m"), QUALITY_ALERTS),
    ) -> None:
        self.broker = broker
        self.codecs = codecs
        self.bus = bus
        self.topics = topics
        self.group = f"bridge-{uuid4().hex[:12]}"
        self.delivered = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subs: list[Subscription] = []

    def start(self) -> BrokerBridge:
        """Join every topic at its newest message and start relaying."""
        publisher = Publisher(self.broker, self.codecs)
        for topic in self.topics:
            publisher.ensure(topic)
            self._subs.append(self.broker.subscribe(topic, self.group, start=StartAt(latest=True)))
        self._thread = threading.Thread(target=self._run, name="qv-bridge", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop relaying and leave the topics."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sub in self._subs:
            sub.close()

    def _run(self) -> None:
        wait = 0.2 if len(self._subs) > 1 else 0.5
        while not self._stop.is_set():
            for sub in self._subs:
                try:
                    messages = sub.fetch(100, timeout_s=wait)
                except QuantiVistaError as exc:  # broker away: try again shortly
                    log.warning("bridge fetch from %s failed: %s", sub.topic, exc)
                    self._stop.wait(0.5)
                    continue
                for message in messages:
                    try:
                        event = self.translate(self.codecs.decode(message.value))
                        if event is not None:
                            self.bus.publish(event)
                            self.delivered += 1
                    except QuantiVistaError as exc:  # unreadable: nothing to show clients
                        log.warning("bridge skipped %s:%s: %s", sub.topic, message.offset, exc)
                    sub.ack(message)

    @staticmethod
    def translate(event: Event) -> Event | None:
        """Return the in-process event a broker event stands for (None: nothing)."""
        if isinstance(event, BarsQuarantined):
            return event
        if not isinstance(event, BarBatch):
            return None
        frame = from_ipc(event.bars)
        rows = frame.select(
            [c for c in _FIELDS if c in frame.columns and c != "ts"],
            ts=pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%z"),
        ).to_dicts()  # the WebSocket speaks JSON objects per bar
        return BarsStreamed(
            occurred_at=event.occurred_at,
            source=event.source,
            timeframe=event.timeframe,
            rows=rows,
            correction=event.correction,
        )
