"""The integration consumer of `qv integrate`: raw bars -> validate -> store -> adjust ->
enrich -> `bars.enriched`.

Each member of a consumer group takes its share of the topic's partitions (by symbol), so a
symbol's bars are applied in order. Per fetched batch: decode (unreadable messages go to the
dead-letter topic at once), keep the latest version of each bar (a correction replaces its
bar), validate and upsert into the store (idempotent: a redelivered batch changes nothing),
enrich, publish, and only then ack: a consumer killed anywhere before the ack has its batch
redelivered to the group, and applying it again is a no-op. Effectively exactly once in the
store; at least once on `bars.enriched` (each enriched batch names its input offsets).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import polars as pl
from prometheus_client import CollectorRegistry, Counter, Gauge

from quantivista.bus.base import Broker, Message, StartAt, Subscription
from quantivista.bus.codecs import CodecName, Codecs
from quantivista.bus.deadletters import send_to_dead_letters
from quantivista.bus.events import BarBatch, Event
from quantivista.bus.frames import from_ipc, to_ipc
from quantivista.bus.publisher import Publisher
from quantivista.bus.topics import ENRICHED_BARS, Route
from quantivista.clock import Clock
from quantivista.config import IntegrateSettings, ProbeSettings
from quantivista.errors import BusError, QuantiVistaError
from quantivista.model.schema import BAR_KEY
from quantivista.ops.metrics import CONSUMER_LAG
from quantivista.pipeline.messages import BatchId
from quantivista.pipeline.runner import InProcessRunner
from quantivista.processing.enrich import enrich, fx_rates
from quantivista.quality.validate import Validator
from quantivista.reference.fx import FxRates
from quantivista.reference.instruments import InstrumentMaster
from quantivista.services.daemon import run_daemon
from quantivista.storage.base import BarStore
from quantivista.storage.contracts import ActionStore

__all__ = ["IntegrationService", "IntegrationStats"]

log = logging.getLogger(__name__)
# Reading a topic's end is a broker round trip per partition (seconds on Tansu over S3): the
# lag gauges are refreshed at most this often, not after every batch.
LAG_EVERY_S = 5.0


@dataclass
class IntegrationStats:
    """What an integration run did."""

    messages: int = 0
    batches: int = 0
    bars_in: int = 0
    written: int = 0
    unchanged: int = 0
    quarantined: int = 0
    enriched: int = 0
    dead_lettered: int = 0
    retried: int = 0


class IntegrationService:
    """Consume raw bars, store them once, publish them enriched."""

    def __init__(
        self,
        runner: InProcessRunner,
        broker: Broker,
        codecs: Codecs,
        actions: ActionStore,
        instruments: InstrumentMaster,
        bars: BarStore,
        settings: IntegrateSettings,
        validator: Validator,
        clock: Clock,
        *,
        codec: CodecName = "avro",
    ) -> None:
        self.runner = runner
        self.broker = broker
        self.codecs = codecs
        self.actions = actions
        self.instruments = instruments
        self.bar_store = bars
        self.settings = settings
        self.validator = validator
        self.clock = clock
        self.publisher = Publisher(broker, codecs, codec)
        self.stats = IntegrationStats()
        self.registry = CollectorRegistry()
        self._messages = Counter(
            "qv_integrate_messages", "messages applied", registry=self.registry
        )
        self._enriched = Counter(
            "qv_integrate_enriched_bars", "bars published", registry=self.registry
        )
        self._dead = Counter(
            "qv_integrate_dead_letters", "messages dead-lettered", registry=self.registry
        )
        self._lag = Gauge("qv_integrate_lag_messages", "topic end - last applied offset",
                          registry=self.registry)  # fmt: skip
        self._applied: dict[str, int] = {}  # topic -> the last offset applied
        self._lag_seen = 0  # the lag last reported
        self._lag_due = 0.0  # monotonic time of the next lag reading
        self._lag_stale = False  # a batch was applied after the last reading

    def subscribe(
        self, topic: str, group: str | None = None, *, member: int = 0, members: int = 1
    ) -> Subscription:
        """Join the group on `topic` (from the earliest message for a new group)."""
        self.publisher.ensure(topic)
        self.publisher.ensure(ENRICHED_BARS)
        return self.broker.subscribe(
            topic,
            group or self.settings.group,
            start=StartAt(),
            member=member,
            members=members,
            ack_wait_s=self.settings.ack_wait_s,
            max_deliver=self.settings.max_deliver,
        )

    def step(self, sub: Subscription, timeout_s: float = 1.0) -> int:
        """Fetch and apply one batch; return how many messages it held."""
        messages = sub.fetch(self.settings.batch, timeout_s)
        if not messages:
            self._report_lag(sub, idle=True)
            return 0
        try:
            self.apply(messages, sub)
        except QuantiVistaError as exc:  # the store or the broker failed: redeliver them
            log.warning("integration batch failed, redelivering: %s", exc)
            self.stats.retried += len(messages)
            for message in messages:
                sub.nack(message, f"{type(exc).__name__}: {exc}", delay_s=1.0)
            return len(messages)
        for message in messages:  # offsets committed after the store and the publish
            sub.ack(message)
        self._applied[sub.topic] = messages[-1].offset
        self._lag_stale = True
        self._report_lag(sub, idle=False)
        return len(messages)

    def _report_lag(self, sub: Subscription, *, idle: bool) -> None:
        """Set the lag gauges from the topic's end: while busy at most every LAG_EVERY_S;
        when a fetch finds nothing, once after the last batch, then while the lag is not 0."""
        due = time.monotonic() >= self._lag_due
        wanted = (self._lag_stale or (self._lag_seen > 0 and due)) if idle else due
        if not wanted or sub.topic not in self._applied:
            return
        lag = max(self.broker.last_offset(sub.topic) - self._applied[sub.topic], 0)
        self._lag_due, self._lag_seen = time.monotonic() + LAG_EVERY_S, lag
        self._lag_stale = False
        self._lag.set(lag)
        CONSUMER_LAG.labels(self.settings.group, sub.topic).set(lag)  # what QvConsumerLag reads

    def apply(self, messages: list[Message], sub: Subscription) -> None:
        """Store and publish the bars of `messages` (idempotent)."""
        frames = []
        for message in messages:
            try:
                event = self.codecs.decode(message.value, dict(message.headers))
                if not isinstance(event, BarBatch):
                    raise BusError("not a bar batch", type=type(event).__name__)
                frame = from_ipc(event.bars)
                _check_keys(frame)
            except BusError as exc:  # permanent: no retry makes these bytes readable
                send_to_dead_letters(self.broker, message, sub.group, str(exc))
                self.stats.dead_lettered += 1
                self._dead.inc()
                continue
            frames.append(frame.with_columns(_offset=pl.lit(message.offset, pl.Int64)))
        self.stats.messages += len(messages)
        self._messages.inc(len(messages))
        if not frames:
            return
        # the latest version of each bar wins (a correction replaces the bar it amends)
        bars = (
            pl.concat(frames, how="diagonal_relaxed")
            .sort("_offset")
            .unique(["symbol", "timeframe", "ts"], keep="last", maintain_order=True)
        )
        first, last = messages[0].offset, messages[-1].offset
        origin = f"{messages[0].topic}:{first}-{last}"
        self.stats.bars_in += bars.height
        for (tf,), part in bars.group_by("timeframe", maintain_order=True):
            stored = self.runner.write(
                part.drop("_offset"),
                source=str(part["provider"][0] or "integrate"),
                batch_id=BatchId(f"integrate-{sub.group}", task_id=origin),
                timeframe=str(tf),
                validator=self.validator,
            )
            self.stats.written += stored.stats.written
            self.stats.unchanged += stored.stats.unchanged
            self.stats.quarantined += stored.quarantined
            enriched = self.enrich(stored.clean, origin)
            make = partial(self._event, timeframe=str(tf), origin=origin)
            routes = self._routes(enriched)
            self.publisher.per_symbol(ENRICHED_BARS, enriched, make, routes)
            self.stats.enriched += enriched.height
            self._enriched.inc(enriched.height)
        self.stats.batches += 1

    def enrich(self, clean: pl.DataFrame, origin: str) -> pl.DataFrame:
        """Adjust and enrich stored bars (reference data as of each bar's date)."""
        if clean.is_empty():
            return clean
        symbols = clean["symbol"].unique().sort().to_list()
        actions = self.actions.for_symbols(symbols)
        day = clean["ts"].max()
        requests = pl.DataFrame({"symbol": symbols}).with_columns(date=pl.lit(day).dt.date())
        ids = self.instruments.resolve(requests)
        reference = ids.join(self.instruments.instruments(), on="instrument_id", how="left")
        if reference.is_empty() or "name" not in reference.columns:
            reference = pl.DataFrame({"symbol": symbols})
        known = reference.get_column("currency") if "currency" in reference.columns else None
        currencies = [] if known is None else known.drop_nulls().unique().to_list()
        report = self.settings.reporting_currency
        rates = None
        if any(c != report for c in currencies):
            rates = fx_rates(currencies, report, FxRates.from_store(self.bar_store).rate)
        for column in ("instrument_id", "name", "asset_class", "exchange", "currency", "sector",
                       "industry"):  # fmt: skip
            if column not in reference.columns:
                reference = reference.with_columns(pl.lit(None, pl.String).alias(column))
        return enrich(clean, actions, reference, rates, reporting_currency=report, source=origin)

    @staticmethod
    def _routes(frame: pl.DataFrame) -> dict[str, Route]:
        heads = frame.unique("symbol", keep="first").select("symbol", "asset_class", "exchange")
        return {s: Route(s, a, e) for s, a, e in heads.iter_rows()}

    def _event(self, symbol: str, part: pl.DataFrame, *, timeframe: str, origin: str) -> Event:
        first, last = part["ts"].min(), part["ts"].max()
        return BarBatch(
            occurred_at=self.clock.now(),
            source=str(part["source"][0]),
            stage="enriched",
            timeframe=timeframe,
            rows=part.height,
            symbols=[symbol],
            bars=to_ipc(part),
            first_ts=first,
            last_ts=last,
            offsets=origin,
        )

    # -- the loop --------------------------------------------------------------------------
    def serve(
        self,
        topic: str,
        probes: ProbeSettings,
        *,
        group: str | None = None,
        member: int = 0,
        members: int = 1,
        idle_exit_s: float | None = None,
        on_ready: Callable[[str], None] | None = None,
    ) -> IntegrationStats:
        """Consume until SIGTERM (or `idle_exit_s` without messages); return the stats."""
        sub = self.subscribe(topic, group, member=member, members=members)

        async def main(stop: asyncio.Event) -> IntegrationStats:
            idle_since = time.monotonic()
            try:
                while not stop.is_set():
                    try:
                        got = await asyncio.to_thread(self.step, sub, 0.5)
                    except QuantiVistaError as exc:  # broker away: wait and try again
                        log.warning("fetch failed: %s", exc)
                        await asyncio.sleep(0.5)
                        continue
                    if got:
                        idle_since = time.monotonic()
                    elif idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
            finally:
                await asyncio.to_thread(sub.close)
            return self.stats

        def broker_ready() -> bool | str:
            return bool(getattr(self.broker, "connected", True)) or "broker disconnected"

        return run_daemon("integrate", probes, main, registries=[self.registry],
                          checks={"broker": broker_ready}, on_ready=on_ready)  # fmt: skip


def _check_keys(frame: pl.DataFrame) -> None:
    """Raise `BusError` for bars without a full key (symbol, timeframe, ts): validation
    refuses them (`SchemaError`) and no retry mends them, so their message goes to the
    dead letters alone instead of failing its whole batch until `max_deliver`."""
    missing = [c for c in BAR_KEY if c not in frame.columns]
    nulls = {c: n for c in BAR_KEY if c in frame.columns and (n := frame[c].null_count())}
    if missing or nulls:
        raise BusError("bars without a full key", missing=missing or None, nulls=nulls or None)
