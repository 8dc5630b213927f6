"""The integration consumer of `qv integrate`: raw bars -> validate -> store -> adjust ->
enrich -> `bars.enriched`.

Each member of a consumer group takes its share of the topic's partitions (by symbol), so a
symbol's bars are applied in order. Per fetched batch: decode, convert to the canonical
schema, keep the latest version of each bar (a correction replaces its bar), validate and
upsert into the store (idempotent: a redelivered batch changes nothing), enrich, publish, and
only then ack: a consumer killed anywhere before the ack has its batch redelivered to the
group, and applying it again is a no-op. Effectively exactly once in the store; at least once
on `bars.enriched` (each enriched batch names its input offsets).

Failures are told apart by `is_retryable()`: a message failing for good at any step goes to
the dead-letter topic alone, at once, its step in `qv-dlq-reason` (the batch is halved until
the bad messages stand alone; the others are applied once); a retryable failure (the store or
the broker away) nacks the batch's messages not yet dead-lettered. An unexpected exception (a
bug, not a platform error) is logged with its traceback and counted
(`qv_integrate_unexpected_errors_total`); its batch is halved like a permanent failure until the
message that raises stands alone, and that message is nacked: redelivered, and dead-lettered by
the subscription after `max_deliver` attempts. `/readyz` fails while the last batch failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import polars as pl
from prometheus_client import CollectorRegistry, Counter, Gauge

from quantivista.bus.base import Broker, Message, StartAt, Subscription
from quantivista.bus.codecs import CodecName, Codecs
from quantivista.bus.deadletters import send_to_dead_letters
from quantivista.bus.events import BarBatch, Event
from quantivista.bus.frames import from_ipc, to_ipc
from quantivista.bus.publisher import Publisher, by_symbol
from quantivista.bus.topics import ENRICHED_BARS, Route
from quantivista.clock import Clock
from quantivista.config import IntegrateSettings, ProbeSettings
from quantivista.errors import (
    DecodeError,
    NotFoundError,
    QuantiVistaError,
    SchemaError,
    StorageError,
)
from quantivista.model.schema import coerce_bars_checked
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
REDELIVER_S = 1.0  # a failed batch's messages come back after this long
_STEP = "qv_step"  # the attribute naming the step an error came from


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
    unexpected: int = 0  # exceptions that are no platform error (bugs), each logged


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
        self._unexpected = Counter(
            "qv_integrate_unexpected_errors", "exceptions that are no platform error (a bug)",
            ["error"], registry=self.registry,
        )  # fmt: skip
        self._failing: str | None = None  # why the last batch failed; None once one succeeds
        self._failed_at = 0.0  # monotonic time of that failure
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
            if self._failing and time.monotonic() - self._failed_at > 2 * REDELIVER_S:
                self._failing = None  # nothing came back: the failed batch was dead-lettered
            self._report_lag(sub, idle=True)
            return 0
        settled: set[int] = set()  # offsets dead-lettered (and acked) or nacked already
        try:
            self.apply(messages, sub, settled)
        except Exception as exc:  # the store or the broker failed, or a bug: redeliver the rest
            if isinstance(exc, QuantiVistaError):
                log.warning("integration batch failed, redelivering: %s", exc)
            else:
                self._count_unexpected(exc, "integration batch failed unexpectedly, redelivering")
            self._failed(f"the last batch failed: {type(exc).__name__}: {exc}")
            for message in messages:
                if message.offset not in settled:
                    self.stats.retried += 1
                    sub.nack(message, f"{type(exc).__name__}: {exc}", delay_s=REDELIVER_S)
            return len(messages)
        self._failing = None
        for message in messages:  # offsets committed after the store and the publish
            if message.offset not in settled:
                sub.ack(message)
        self._applied[sub.topic] = messages[-1].offset
        self._lag_stale = True
        self._report_lag(sub, idle=False)
        return len(messages)

    def _count_unexpected(self, exc: BaseException, what: str) -> None:
        """Log an exception that is no platform error with its traceback, and count it."""
        log.error("%s: %s: %s", what, type(exc).__name__, exc, exc_info=exc)
        self.stats.unexpected += 1
        self._unexpected.labels(type(exc).__name__).inc()

    def _failed(self, why: str) -> None:
        self._failing, self._failed_at = why, time.monotonic()

    def ready(self) -> bool | str:
        """Say whether the last batch went through (the `/readyz` check `batches`)."""
        return self._failing or True

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

    def apply(
        self, messages: list[Message], sub: Subscription, settled: set[int] | None = None
    ) -> None:
        """Store and publish the bars of `messages` (idempotent).

        A message that fails for good (`is_retryable()` false, at any step) goes to the dead
        letters alone, at once, and is acked (its offset joins `settled`); the others carry
        on. A retryable failure propagates: the caller redelivers what is not settled."""
        settled = set() if settled is None else settled
        inputs = []
        for message in messages:
            try:
                inputs.append(self._decode(message))
            except QuantiVistaError as exc:
                self._set_aside(message, sub, exc, settled)
        self.stats.messages += len(messages)
        self._messages.inc(len(messages))
        if not inputs:
            return
        first, last = messages[0].offset, messages[-1].offset
        origin = f"{messages[0].topic}:{first}-{last}"
        batch_id = BatchId(f"integrate-{sub.group}", task_id=origin)
        results = self._isolate(inputs, sub, settled, batch_id, origin)
        self._publish(results, origin, sub, settled)
        self.stats.batches += 1

    def _isolate(
        self,
        inputs: list[_Input],
        sub: Subscription,
        settled: set[int],
        batch_id: BatchId,
        origin: str,
    ) -> list[_Result]:
        """Integrate `inputs`; when that fails for good, each half again (in offset order: a
        later correction is still applied last) until the bad messages stand alone and go to
        the dead letters. Upserts are idempotent and nothing is published before every
        message has been through, so the good ones are stored and published once."""
        try:
            return [self._integrate(inputs, batch_id, origin)]
        except QuantiVistaError as exc:
            if exc.is_retryable():
                raise
            if len(inputs) == 1:
                self._set_aside(inputs[0].message, sub, exc, settled)
                return []
            log.info("a message of %s fails for good (%s): halving %d", origin, exc, len(inputs))
        except Exception as exc:  # a bug: find the message that raises, redeliver it alone
            if len(inputs) == 1:
                message = inputs[0].message
                self._count_unexpected(exc, f"{message.topic}:{message.offset} failed unexpectedly")
                sub.nack(message, f"{type(exc).__name__}: {exc}", delay_s=REDELIVER_S)
                self.stats.retried += 1
                settled.add(message.offset)
                return []
            log.info("%s failed unexpectedly (%r): halving %d", origin, exc, len(inputs))
        half = len(inputs) // 2
        return [
            *self._isolate(inputs[:half], sub, settled, batch_id, origin),
            *self._isolate(inputs[half:], sub, settled, batch_id, origin),
        ]

    def _decode(self, message: Message) -> _Input:
        """Return a message's bars (with its offset and timeframe); raise why not (for good)."""
        with _step("decode"):
            event = self.codecs.decode(message.value, dict(message.headers))
            if not isinstance(event, BarBatch):
                raise DecodeError("not a bar batch", type=type(event).__name__)
            frame = from_ipc(event.bars)
        if "timeframe" not in frame.columns:
            frame = frame.with_columns(timeframe=pl.lit(event.timeframe, pl.String))
        return _Input(message, frame.with_columns(_offset=pl.lit(message.offset, pl.Int64)))

    def _integrate(self, inputs: list[_Input], batch_id: BatchId, origin: str) -> _Result:
        """Validate, store, adjust and enrich the bars of `inputs` (nothing is published)."""
        with _step("schema"):  # wrong types, an unknown timeframe, a bar without its key
            bars = _canonical([i.frame for i in inputs])
        # the latest version of each bar wins (a correction replaces the bar it amends)
        bars = bars.sort("_offset").unique(
            ["symbol", "timeframe", "ts"], keep="last", maintain_order=True
        )
        result = _Result(inputs, bars_in=bars.height)
        for (tf,), part in bars.group_by("timeframe", maintain_order=True):
            try:
                stored = self.runner.write(
                    part.drop("_offset"),
                    source=str(part["provider"][0] or "integrate"),
                    batch_id=batch_id,
                    timeframe=str(tf),
                    validator=self.validator,
                )
            except QuantiVistaError as exc:
                _tag(exc, "store" if isinstance(exc, StorageError) else "validate")
                raise
            result.written += stored.stats.written
            result.unchanged += stored.stats.unchanged
            result.quarantined += stored.quarantined
            result.enriched[str(tf)] = self.enrich(stored.clean, origin)
        return result

    def _publish(
        self, results: list[_Result], origin: str, sub: Subscription, settled: set[int]
    ) -> None:
        """Encode every enriched symbol's event (a message whose event cannot be encoded goes
        to the dead letters), then publish them all in one go."""
        items = []
        count = 0
        for result in results:
            self.stats.bars_in += result.bars_in
            self.stats.written += result.written
            self.stats.unchanged += result.unchanged
            self.stats.quarantined += result.quarantined
        limit = self.publisher.broker.max_message_bytes()  # once, not once a symbol
        for tf, enriched in _merged(results).items():
            make = partial(self._event, timeframe=tf, origin=origin)
            routes = self._routes(enriched)
            for symbol, part in by_symbol(enriched):
                try:
                    with _step("publish"):
                        items.append(
                            self.publisher.symbol_item(symbol, part, make, routes, limit=limit)
                        )
                except QuantiVistaError as exc:
                    if exc.is_retryable():
                        raise
                    for result in results:
                        for one in result.inputs:
                            if one.has(symbol, tf) and one.message.offset not in settled:
                                self._set_aside(one.message, sub, exc, settled)
                    continue
                count += part.height
        self.publisher.items(ENRICHED_BARS, items)
        self.stats.enriched += count
        self._enriched.inc(count)

    def _set_aside(
        self, message: Message, sub: Subscription, exc: QuantiVistaError, settled: set[int]
    ) -> None:
        """Dead-letter `message` for a permanent failure (and ack it); re-raise a retryable
        one (the batch is redelivered)."""
        if exc.is_retryable():
            raise exc
        reason = str(getattr(exc, _STEP, "integrate"))
        error = f"{type(exc).__name__}: {exc}"
        log.warning("dead-lettering %s:%d (%s): %s", message.topic, message.offset, reason, error)
        send_to_dead_letters(self.broker, message, sub.group, error, reason=reason)
        sub.ack(message)
        settled.add(message.offset)
        self.stats.dead_lettered += 1
        self._dead.inc()

    def enrich(self, clean: pl.DataFrame, origin: str) -> pl.DataFrame:
        """Adjust and enrich stored bars (reference data as of each bar's date); raise a
        permanent error for bars it cannot convert (an instrument without a currency in the
        master, no FX rate at the bar's time)."""
        if clean.is_empty():
            return clean
        symbols = clean["symbol"].unique().sort().to_list()
        actions = self.actions.for_symbols(symbols)
        day = clean["ts"].max()
        with _step("reference"):
            requests = pl.DataFrame({"symbol": symbols}).with_columns(date=pl.lit(day).dt.date())
            ids = self.instruments.resolve(requests)
            reference = ids.join(self.instruments.instruments(), on="instrument_id", how="left")
            if reference.is_empty() or "name" not in reference.columns:
                reference = pl.DataFrame({"symbol": symbols})
            for column in ("instrument_id", "name", "asset_class", "exchange", "currency",
                           "sector", "industry"):  # fmt: skip
                if column not in reference.columns:
                    reference = reference.with_columns(pl.lit(None, pl.String).alias(column))
            known = pl.col("instrument_id").is_not_null()
            _refuse(
                reference.filter(known & pl.col("currency").is_null()),
                NotFoundError("the instrument master has no currency for the instrument"),
            )
        currencies = reference["currency"].drop_nulls().unique().to_list()
        report = self.settings.reporting_currency
        rates = None
        with _step("fx"):
            if any(c != report for c in currencies):
                rates = fx_rates(currencies, report, FxRates.from_store(self.bar_store).rate)
        with _step("adjust"):  # adjust_bars skips unusable actions (a ratio <= 0, say)
            out = enrich(clean, actions, reference, rates, reporting_currency=report, source=origin)
        with _step("fx"):
            _refuse(
                out.filter(pl.col("fx_rate").is_null()),
                NotFoundError(f"no FX rate to {report} at the bar's time"),
            )
        return out

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
                    except Exception as exc:  # broker away (or a bug): wait and try again
                        if isinstance(exc, QuantiVistaError):
                            log.warning("fetch failed: %s", exc)
                        else:
                            self._count_unexpected(exc, "integration step failed unexpectedly")
                        self._failed(f"the last step failed: {type(exc).__name__}: {exc}")
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

        checks = {"broker": broker_ready, "batches": self.ready}
        return run_daemon("integrate", probes, main, registries=[self.registry],
                          checks=checks, on_ready=on_ready)  # fmt: skip


@dataclass
class _Input:
    """A decoded message: its bars in the canonical schema, tagged with its offset."""

    message: Message
    frame: pl.DataFrame

    def has(self, symbol: str, timeframe: str) -> bool:
        """Say whether this message holds bars of `symbol` at `timeframe`."""
        hit = self.frame.filter((pl.col("symbol") == symbol) & (pl.col("timeframe") == timeframe))
        return hit.height > 0


@dataclass
class _Result:
    """What integrating some messages stored and the enriched bars it built per timeframe."""

    inputs: list[_Input]
    bars_in: int = 0
    written: int = 0
    unchanged: int = 0
    quarantined: int = 0
    enriched: dict[str, pl.DataFrame] = field(default_factory=dict)


def _merged(results: list[_Result]) -> dict[str, pl.DataFrame]:
    """Return the enriched bars of `results` per timeframe, one row per bar (the message
    applied last wins, as in the store)."""
    parts: dict[str, list[pl.DataFrame]] = {}
    for result in results:
        for tf, frame in result.enriched.items():
            parts.setdefault(tf, []).append(frame)
    return {
        tf: frames[0]
        if len(frames) == 1
        else pl.concat(frames, how="diagonal_relaxed").unique(
            ["symbol", "ts"], keep="last", maintain_order=True
        )
        for tf, frames in parts.items()
    }


def _tag(exc: QuantiVistaError, step: str) -> None:
    """Name the step that failed on the error (the dead letter's reason); the innermost wins."""
    if not hasattr(exc, _STEP):
        setattr(exc, _STEP, step)


@contextmanager
def _step(name: str) -> Iterator[None]:
    """Tag a `QuantiVistaError` raised inside with the step `name`."""
    try:
        yield
    except QuantiVistaError as exc:
        _tag(exc, name)
        raise


def _refuse(bad: pl.DataFrame, error: QuantiVistaError) -> None:
    """Raise `error`, naming the symbols of `bad`, when it has rows."""
    if bad.height:
        error.context["symbols"] = sorted(set(bad["symbol"].to_list()))
        raise error


def _canonical(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Return the messages' bars in the canonical schema, `_offset` kept (one conversion per
    batch: when it fails, the batch is tried message by message to find the bad one)."""
    try:
        raw = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    except pl.exceptions.PolarsError as exc:
        raise SchemaError(f"bars of different shapes: {exc}") from None
    bars, _ = coerce_bars_checked(raw.drop("_offset"))  # symbol problems: quarantined later
    return bars.with_columns(raw["_offset"])
