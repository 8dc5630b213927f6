"""The real-time pipeline of `qv stream`: live trades -> 1-minute bars -> validate -> store ->
publish.

    source (WebSocket / synthetic) --bounded queue--> micro-batches (adaptive, see below)
        -> trades.<provider>                  (the trades, one message per partition, Arrow)
        -> MinuteBars (event time, watermark; late trades amend bars: corrections)
        -> bars.raw.1m                        (bars as built, before validation)
        -> the pipeline's validate + store stages (InProcessRunner.write, idempotent upserts;
           the validation history is the stream's own recent stored bars, not a store read)
        -> bars.normalized                    (validated canonical bars, sent while stored)
        -> ingestion.events / quality.alerts  (what the store stage announced)

Stages overlap where the order of the data allows: publishes are started without waiting
for the broker (`Broker.publish_async`; a topic's messages keep their order) and their acks
are awaited where the micro-batch ends. Raw bars go out while they are validated and
stored; normalized bars go out as soon as they are validated, while the store writes them:
a micro-batch of bars is done when they are stored and both publishes are acked. (A failed
write stops the stream; the normalized bars it sent are bars that passed validation, and
`ingestion.events` says what landed.) Folding runs on the loop; the store stage on a thread
of its own, in order, a few releases behind at most; folding goes on while a release is
stored (holding the folds back until its bars were out, which session 7 tried, was slower
in every run: one runnable thread gets half the CPU share on a busy machine). The store
thread does the bookkeeping after the bars are out (scores, quarantine, report, the audit
record, announcements), all of it before the next release is stored: a crash after the
bars are out and before the bookkeeping loses no bars, only the records of a write that
happened.

A micro-batch closes `batch_ms` after its first trade arrived, at `batch_rows` trades, or
at once when a trade passes the time that closes the oldest open minute (bars to release:
waiting would only add latency). The history a symbol's first bars are validated with is
read when its first trade arrives, on the store thread, not when its first bar closes; a
lake gives its partitions an empty base file then, so that its first bars are an append.

Bars and corrections travel one message per partition and release (`qv-symbols` lists the
symbols; a symbol stays in its partition, in order). Backpressure: the source waits when the
queue is full (a WebSocket stops being read, the vendor's buffer fills). Lag is measured and
exported: queue depth, event-time lag of the newest trade, trade arrival -> stored and
published latency per micro-batch, and the time of each stage (`STAGES`) so the latency
budget shows where it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import polars as pl
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from quantivista.bus.base import Broker, EventBus
from quantivista.bus.codecs import CodecName, Codecs
from quantivista.bus.events import BarBatch, BarsIngested, BarsQuarantined, Event, TradesBatch
from quantivista.bus.frames import to_ipc
from quantivista.bus.publisher import Publisher
from quantivista.bus.topics import (
    INGESTION_EVENTS,
    NORMALIZED_BARS,
    QUALITY_ALERTS,
    raw_bars,
    trades,
)
from quantivista.clock import Clock
from quantivista.config import ProbeSettings, StreamSettings
from quantivista.errors import ConfigurationError
from quantivista.model.schema import PL_UTC_TS, coerce_bars, utc_lit
from quantivista.model.symbols import symbol_problem
from quantivista.model.timeframe import Timeframe
from quantivista.pipeline.messages import Batch, BatchId, StoredBatch
from quantivista.pipeline.recent import RecentHistory
from quantivista.pipeline.runner import InProcessRunner
from quantivista.processing.trade_bars import TRADE_SCHEMA, MinuteBars, Released
from quantivista.providers.finnhub import FinnhubTradeStream
from quantivista.providers.live import finnhub_trades, synthetic_trades
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import TradingCalendar
from quantivista.services.daemon import run_daemon
from quantivista.services.ingestion import IngestionService
from quantivista.storage.base import BarStore

__all__ = [
    "RestBackfill",
    "StreamMetrics",
    "StreamService",
    "StreamStats",
    "open_feed",
]

STAGES = ("fold", "queue", "publish_raw", "validate", "store", "publish")
"""The stages of a micro-batch whose time is measured: fold trades into bars (and start
publishing the trades), queue (a release handed to the store thread until it starts
there: the thread hop and the work ahead of it), publish raw bars (start to ack),
validate, store (validated to stored), publish normalized bars (start to ack,
overlapping the store)."""

_IN_FLIGHT = 64  # publishes of one kind not acked yet, at most (then the caller waits)

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class StreamMetrics:
    """Prometheus metrics of one stream process (its own registry, served by the probes)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.trades = Counter("qv_stream_trades", "trades taken", registry=r)
        self.bars = Counter("qv_stream_bars", "bars stored and published", ["kind"], registry=r)
        self.too_late = Counter("qv_stream_too_late_trades", "trades past retention", registry=r)
        self.quarantined = Counter("qv_stream_quarantined_bars", "bars held", registry=r)
        self.queue = Gauge("qv_stream_queue_depth", "micro-batches waiting", registry=r)
        self.lag = Gauge("qv_stream_event_lag_seconds", "now - newest trade time", registry=r)
        self.latency = Histogram(
            "qv_stream_latency_seconds",
            "trade arrival -> bars stored and published, per micro-batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "qv_stream_stage_seconds",
            "time of one stage of a micro-batch (see STAGES)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )


Backfill = Callable[[list[str], datetime, datetime], pl.DataFrame]
"""backfill(symbols, start, end): fetch 1-minute bars over [start, end) from a REST provider,
store them, and return the stored bars of that span."""


class RestBackfill:
    """Back-fill through the REST providers: an ingestion job for the span (the streamed vendor
    first when it serves REST bars), then the stored bars of the span."""

    def __init__(
        self, ingestion: IngestionService, bars: BarStore, providers: list[str] | None
    ) -> None:
        self.ingestion = ingestion
        self.bars = bars
        self.providers = providers

    def __call__(self, symbols: list[str], start: datetime, end: datetime) -> pl.DataFrame:
        self.ingestion.ingest(symbols, start, end, "1m", self.providers)
        return self.bars.read(symbols, Timeframe.parse("1m"), start, end)


# a silence of the whole feed this long (in event time) is taken for a disconnect
_GAP = timedelta(seconds=60)


class _Sent:
    """A publish started at `began` (perf_counter); `acked` is set when the broker has it."""

    def __init__(self, stage: str, began: float, future: Future[list[int]]) -> None:
        self.stage, self.began, self.future = stage, began, future
        self.acked: float | None = None
        future.add_done_callback(self._done)

    def _done(self, _: Future[list[int]]) -> None:
        self.acked = time.perf_counter()


@dataclass
class StreamStats:
    """What a stream run did."""

    backfilled: int = 0
    trades: int = 0
    batches: int = 0
    bars: int = 0
    corrections: int = 0
    too_late: int = 0
    quarantined: int = 0
    published: int = 0


class StreamService:
    """Turn a live trade feed into stored and published 1-minute bars."""

    def __init__(
        self,
        runner: InProcessRunner,
        bus: EventBus,
        broker: Broker,
        codecs: Codecs,
        settings: StreamSettings,
        validator: Validator,
        clock: Clock,
        *,
        codec: CodecName = "avro",
        provider: str = "synthetic",
        calendar: TradingCalendar | None = None,
        backfill: Backfill | None = None,
    ) -> None:
        self.runner = runner
        self.calendar = calendar
        self.backfill = backfill
        self.gaps: list[tuple[datetime, datetime]] = []  # feed silences to back-fill
        self._newest: datetime | None = None
        self._symbols: set[str] = set()
        self._odd_symbols: set[str | None] = set()  # seen, off the symbol rule as sent
        self._actions: tuple[tuple[object, int], pl.DataFrame] | None = None
        self.broker = broker
        self.settings = settings
        self.validator = validator
        self.clock = clock
        self.provider = provider
        self.publisher = Publisher(broker, codecs, codec)
        self.metrics = StreamMetrics()
        self.stats = StreamStats()
        # arrival -> stored and published, in seconds: every micro-batch, and those that
        # released bars (what perf/stream.py reports percentiles of)
        self.latencies: deque[float] = deque(maxlen=200_000)
        self.bar_latencies: deque[float] = deque(maxlen=200_000)
        # seconds per stage and micro-batch (the latency budget)
        self.stage_times: dict[str, deque[float]] = {s: deque(maxlen=200_000) for s in STAGES}
        # CPU seconds of the stages run by one thread (fold, validate, store): what a loaded
        # machine's wall times hide
        self.stage_cpu: dict[str, deque[float]] = {s: deque(maxlen=200_000) for s in STAGES}
        # thread CPU seconds along each release's path: its micro-batch's fold and the
        # store thread's work until its bars are out (a lower bound of its latency that a
        # loaded machine does not stretch; the broker's round trips are not in it)
        self.bar_cpu: deque[float] = deque(maxlen=200_000)
        self._published_at: float | None = None  # when the last stored bars went out
        self._published_cpu: float | None = None  # the store thread's CPU clock then
        # publishes in flight: trades (the loop's), store events (the store thread's)
        self._trades_out: deque[Future[list[int]]] = deque()
        self._events_out: deque[Future[list[int]]] = deque()
        self.fresh: list[tuple[list[str], datetime]] = []  # symbols first seen, and when
        # the validation history: the bars this stream stored (a store read per release
        # only for a batch older than what is kept), amendments within the retention too
        self.recent = RecentHistory(
            runner.sinks.bars, validator, "1m", reach=timedelta(seconds=settings.retention_s)
        )
        self.bars = MinuteBars(
            lateness=timedelta(seconds=settings.lateness_s),
            retention=timedelta(seconds=settings.retention_s),
            idle=timedelta(seconds=settings.idle_s),
        )
        self.job_id = f"stream-{provider}-{clock.now():%Y%m%dT%H%M%S}"
        self._batch_no = 0
        self._warmed = False  # the validator's first call made (`_warm_up`)
        self._subs = [
            bus.subscribe(BarsIngested.topic, self._forward, name="stream-forward"),
            bus.subscribe(BarsQuarantined.topic, self._forward, name="stream-forward"),
        ]
        self._bus = bus
        self.topic = raw_bars("1m")
        self.trades_topic = trades(provider)
        topics = (self.topic, NORMALIZED_BARS, self.trades_topic, INGESTION_EVENTS, QUALITY_ALERTS)
        for topic in topics:
            self.publisher.ensure(topic)

    def _forward(self, event: Event) -> None:
        """Send what the store stage announced to the ingestion and quality topics."""
        # not waited for here: the next release need not wait for these acks
        if isinstance(event, BarsIngested) and event.job_id == self.job_id:
            future = self.publisher.submit_event(INGESTION_EVENTS, event, key=event.job_id)
            _in_flight(self._events_out, future)
        elif isinstance(event, BarsQuarantined) and event.job_id == self.job_id:
            future = self.publisher.submit_event(QUALITY_ALERTS, event, key=event.job_id)
            _in_flight(self._events_out, future)

    def close(self) -> None:
        """Leave the in-process bus."""
        for sid in self._subs:
            self._bus.unsubscribe(sid)

    # -- one micro-batch ---------------------------------------------------------------------
    def process(self, batch: pl.DataFrame, *, arrived: float | None = None) -> Released:
        """Publish the trades, fold them into bars, store and publish what was released."""
        released = self.aggregate(batch)
        while self.fresh:
            self.welcome(*self.fresh.pop(0))
        self.emit(released, arrived if batch.height else None)
        if self.gaps:
            self.fill_gaps()
        return released

    def welcome(self, symbols: list[str], at: datetime) -> None:
        """Make ready for the first bars of symbols first seen at `at`: read their history,
        and give their store partitions a (empty) base file if they have none, so that their
        first bars append like every later release instead of writing a base (a lake's
        dearest write) on the latency path. A store of another month's partitions (a stream
        running across the turn of a month) writes those bases with their first bars.

        Called for a symbol's first trade, and by `qv stream` for its symbols before the
        feed starts (a first minute may close a moment after the start)."""
        self._odd_symbols.update(s for s in symbols if not _canonical(s))
        self._symbols.update(symbols)
        # storage first: the history read then finds (and keeps) the new partitions' tails,
        # which the first release's append consults
        self.runner.sinks.bars.prepare(symbols, Timeframe.parse("1m"), at)
        self.recent.seed(symbols, at)
        fit = [s for s in symbols if _canonical(s)]
        if fit and not self._warmed:
            self._warm_up(fit, at)

    def _warm_up(self, symbols: list[str], at: datetime) -> None:
        """Validate a throwaway bar per symbol at `at` against the kept history, once: the
        validator's first call builds its rule plans and Polars' first queries (~2-5 ms the
        first release would pay on the latency path). Nothing is stored, published or kept."""
        self._warmed = True
        minute = at.astimezone(UTC).replace(second=0, microsecond=0)
        n = len(symbols)
        sample = coerce_bars(
            pl.DataFrame(
                {
                    "symbol": symbols,
                    "timeframe": ["1m"] * n,
                    "ts": pl.Series([minute] * n, dtype=PL_UTC_TS),
                    **{c: [1.0] * n for c in ("open", "high", "low", "close", "volume")},
                }
            ),
            provider=self.provider,
            job_id=self.job_id,
            ingested_at=minute,
        )
        self.validator.validate(
            sample,
            job_id=self.job_id,
            actions=self._known_actions(),
            history=self.recent.frame,  # what `recent.history` answers for bars at `at`
        )

    def _timed(
        self, stage: str, began: float, end: float | None = None, cpu: float | None = None
    ) -> None:
        took = (end if end is not None else time.perf_counter()) - began
        self.stage_times[stage].append(took)
        self.metrics.stage.labels(stage).observe(took)
        if cpu is not None:
            self.stage_cpu[stage].append(time.thread_time() - cpu)

    def aggregate(self, batch: pl.DataFrame) -> Released:
        """Publish a micro-batch of trades and fold it into bars; return what it released."""
        began, cpu = time.perf_counter(), time.thread_time()
        try:
            return self._aggregate(batch)
        finally:
            self._timed("fold", began, cpu=cpu)

    def _aggregate(self, batch: pl.DataFrame) -> Released:
        now = self.clock.now()
        if batch.height:
            self.stats.trades += batch.height
            self.metrics.trades.inc(batch.height)
            newest = batch["ts"].max()
            if isinstance(newest, datetime):
                self.metrics.lag.set((now - newest).total_seconds())
            if self.settings.publish_trades:
                self._track(
                    self.publisher.submit_per_partition(
                        self.trades_topic, batch, self._trades_event
                    )
                )
            self._note_gap(batch)
        return self.bars.add(batch, now=now)

    def _track(self, future: Future[list[int]]) -> None:
        _in_flight(self._trades_out, future)

    def drain(self) -> None:
        """Wait for the publishes in flight."""
        for pending in (self._trades_out, self._events_out):
            while pending:
                pending.popleft().result(timeout=60)

    # -- gaps after a disconnect -------------------------------------------------------------
    def _note_gap(self, batch: pl.DataFrame) -> None:
        """Remember a silence of the whole feed (the first trade after it, the last before),
        and the symbols seen for the first time."""
        names = batch["symbol"].unique().to_list()
        new = [n for n in names if n not in self._symbols]
        self._odd_symbols.update(n for n in new if not _canonical(n))
        newest = batch["ts"].max()
        assert isinstance(newest, datetime)
        if new:
            self._symbols.update(new)
            first = batch["ts"].min()
            assert isinstance(first, datetime)
            self.fresh.append((new, _floor_minute(first)))
        # a silence ends in this batch only if its newest trade is that far past the last
        if self._newest is not None and newest - self._newest > _GAP:
            after = batch.filter(pl.col("ts") > self._newest)["ts"].min()
            if isinstance(after, datetime) and after - self._newest > _GAP:
                self.gaps.append((self._newest, after))
        self._newest = newest if self._newest is None else max(self._newest, newest)

    def missing_minutes(self, after: datetime, before: datetime) -> pl.Series:
        """Return the session minutes between the minutes of `after` and `before` (exclusive)."""
        lo = _floor_minute(after) + timedelta(minutes=1)
        hi = _floor_minute(before)
        if self.calendar is None or hi <= lo:
            return pl.Series("ts", [], dtype=pl.Datetime("us", "UTC"))
        starts = self.calendar.bar_starts(lo.date() - timedelta(days=1), hi.date(), "1m")
        return starts.filter(starts.is_between(lo, hi, closed="left"))

    def fill_gaps(self) -> int:
        """Back-fill the session minutes of every silence seen; store and publish them."""
        filled = 0
        while self.gaps:
            after, before = self.gaps.pop(0)
            minutes = self.missing_minutes(after, before)
            if self.backfill is None or minutes.is_empty() or not self._symbols:
                continue
            first, last = minutes.min(), minutes.max()
            assert isinstance(first, datetime) and isinstance(last, datetime)
            bars = self.backfill(sorted(self._symbols), first, last + timedelta(minutes=1))
            # stored by the ingestion job, not by this stream: the kept history is read
            # again (once) with them
            self.recent.forget(sorted(self._symbols))
            bars = bars.filter(pl.col("ts").is_in(minutes.implode()))
            if bars.is_empty():
                continue
            for topic, stage in ((self.topic, "raw"), (NORMALIZED_BARS, "normalized")):
                make = partial(self._bars_event, correction=False, stage=stage,
                               source=f"{self.provider}-rest")  # fmt: skip
                self.publisher.per_partition(topic, bars, make)
            filled += bars.height
        self.stats.backfilled += filled
        return filled

    def emit(
        self,
        released: Released,
        arrived: float | None = None,
        fold_cpu: float | None = None,
        queued: float | None = None,
    ) -> None:
        """Store and publish released bars; record the latency from `arrived` to the last
        of: stored, raw and normalized bars acked (or to now, when nothing was stored).
        `fold_cpu`: the CPU time of the release's fold (default: the newest fold's);
        `queued`: when the release was handed to this thread (`perf_counter`: the wait
        for the store thread is the `queue` stage)."""
        if queued is not None and not released.empty:
            self._timed("queue", queued)
        self._published_at = self._published_cpu = None
        cpu = time.thread_time()
        self._emit(released)
        if arrived is not None:
            took = (self._published_at or time.monotonic()) - arrived
            self.metrics.latency.observe(took)
            self.latencies.append(took)
            if not released.empty:
                self.bar_latencies.append(took)
                fold = fold_cpu if fold_cpu is not None else _newest(self.stage_cpu["fold"])
                self.bar_cpu.append((self._published_cpu or time.thread_time()) - cpu + fold)

    def flush(self) -> Released:
        """Store and publish every open bar (at shutdown)."""
        released = self.bars.flush()
        self._emit(released)
        self.drain()
        return released

    def _emit(self, released: Released) -> None:
        self.stats.too_late += released.too_late
        self.metrics.too_late.inc(released.too_late)
        kinds = [(f, c) for f, c in ((released.bars, False), (released.corrections, True))
                 if not f.is_empty()]  # fmt: skip
        for bars, correction in kinds:  # canonical 1m bars (`MinuteBars`)
            stored = self._store(bars, correction)
            clean = stored.clean
            kind = "correction" if correction else "bar"
            self.metrics.bars.labels(kind).inc(clean.height)
            self.metrics.quarantined.inc(stored.quarantined)
            self.stats.quarantined += stored.quarantined
            if correction:
                self.stats.corrections += clean.height
            else:
                self.stats.bars += clean.height

    def _store(self, bars: pl.DataFrame, correction: bool) -> StoredBatch:
        """Publish raw bars, validate, publish the clean ones while storing them; when
        stored, wait for both publishes (the micro-batch's bars are out)."""
        began, cpu = time.perf_counter(), time.thread_time()
        sent = [_Sent("publish_raw", began, self._submit(self.topic, bars, correction, "raw"))]
        validated_at, validated_cpu = began, cpu

        def validated(clean: pl.DataFrame) -> None:
            nonlocal validated_at, validated_cpu
            validated_at = time.perf_counter()
            self._timed("validate", began, cpu=cpu)
            validated_cpu = time.thread_time()
            future = self._submit(NORMALIZED_BARS, clean, correction, "normalized")
            sent.append(_Sent("publish", validated_at, future))

        def stored(clean: pl.DataFrame) -> None:
            self._timed("store", validated_at, cpu=validated_cpu)
            for one in sent:
                offsets = one.future.result(timeout=60)
                self._timed(one.stage, one.began, one.acked)
                if one.stage == "publish":
                    self.stats.published += len(offsets)
            self._published_at, self._published_cpu = time.monotonic(), time.thread_time()

        self._batch_no += 1
        batch_id = BatchId(self.job_id, batch_no=self._batch_no)
        batch = self._as_batch(bars, batch_id)
        if batch is None:  # a symbol off the symbol rule: `coerce` holds its rows
            return self.runner.write(bars, source=self.provider, batch_id=batch_id,
                                     timeframe="1m", validator=self.validator,
                                     actions=self._known_actions(), recent=self.recent,
                                     on_validated=validated, on_bars=stored)  # fmt: skip
        return self.runner.process(batch, validator=self.validator, actions=self._known_actions(),
                                   recent=self.recent, on_validated=validated,
                                   on_bars=stored)  # fmt: skip

    def _as_batch(self, bars: pl.DataFrame, batch_id: BatchId) -> Batch | None:
        """Return released bars as a canonical batch, or None when a symbol the feed sent
        breaks the symbol rule (checked once a symbol, at its first trade).

        `MinuteBars` releases canonical bars (`bar_exprs`) built from typed trades: what
        `coerce` checks and casts holds already, and its per-release cost (a dozen frame
        operations, each symbol's rule) is saved; only the lineage is filled in here. A
        test holds the two to the same frame."""
        if self._odd_symbols:
            return None
        now = self.runner.clock.now()
        frame = bars.clone()  # a frame of our own (the released one is published raw)
        if frame["provider"].null_count():
            frame = frame.with_columns(pl.col("provider").fill_null(pl.lit(self.provider)))
        # the lineage as columns of one repeated value (no query: `with_columns` of two
        # literals is a Polars query, ~5x the cost on a release's ~50 bars)
        n = frame.height
        lineage = (("ingested_at", _utc_series(now)),
                   ("job_id", pl.Series([batch_id.job_id], dtype=pl.String)))  # fmt: skip
        for name, one in lineage:
            frame.replace_column(frame.get_column_index(name), one.new_from_index(0, n).alias(name))
        return Batch(batch_id, frame, self.provider, now)

    def _known_actions(self) -> pl.DataFrame:
        """Return the corporate actions of the symbols seen, read again only when the
        action store changed (its `version`, any process) or a symbol came."""
        store = self.runner.actions
        key = (store.version(), len(self._symbols))
        if self._actions is None or key != self._actions[0]:
            self._actions = (key, store.for_symbols(sorted(self._symbols)))
        return self._actions[1]

    def _submit(
        self, topic: str, bars: pl.DataFrame, correction: bool, stage: str
    ) -> Future[list[int]]:
        make = partial(self._bars_event, correction=correction, stage=stage)
        return self.publisher.submit_per_partition(topic, bars, make)

    def _trades_event(self, symbols: list[str], part: pl.DataFrame) -> Event:
        return TradesBatch(occurred_at=self.clock.now(), source=self.provider, rows=part.height,
                           symbols=symbols, trades=to_ipc(part))  # fmt: skip

    def _bars_event(
        self,
        symbols: list[str],
        part: pl.DataFrame,
        correction: bool,
        stage: str,
        source: str | None = None,
    ) -> Event:
        first, last = part["ts"].min(), part["ts"].max()
        return BarBatch(
            occurred_at=self.clock.now(),
            source=source or self.provider,
            stage=stage,
            timeframe="1m",
            rows=part.height,
            symbols=symbols,
            bars=to_ipc(part),
            correction=correction,
            first_ts=first if isinstance(first, datetime) else None,
            last_ts=last if isinstance(last, datetime) else None,
        )

    def serve(
        self,
        feed: AsyncIterator[pl.DataFrame],
        probes: ProbeSettings,
        *,
        duration_s: float | None = None,
        on_ready: Callable[[str], None] | None = None,
    ) -> StreamStats:
        """Run with probes until the feed ends, `duration_s` passes or SIGTERM arrives."""

        async def main(stop: asyncio.Event) -> StreamStats:
            if duration_s is not None:
                asyncio.get_running_loop().call_later(duration_s, stop.set)
            return await self.run(feed, stop)

        def broker_ready() -> bool | str:
            return bool(getattr(self.broker, "connected", True)) or "broker disconnected"

        return run_daemon(
            "stream",
            probes,
            main,
            registries=[self.metrics.registry],
            checks={"broker": broker_ready},
            on_ready=on_ready,
        )

    # -- the loop ------------------------------------------------------------------------------
    async def run(self, source: AsyncIterator[pl.DataFrame], stop: asyncio.Event) -> StreamStats:
        """Consume `source` until it ends or `stop` is set; flush open bars; return stats."""
        queue: asyncio.Queue[tuple[float, pl.DataFrame] | None] = asyncio.Queue(
            self.settings.queue_size
        )

        async def read() -> None:
            try:
                async for frame in source:
                    await queue.put((time.monotonic(), frame))  # waits when full: backpressure
                    if stop.is_set():
                        break
            finally:
                await queue.put(None)

        reader = asyncio.create_task(read())
        loop = asyncio.get_running_loop()
        # storing bars takes longer than folding trades: it runs on its own thread, in
        # order, while the next micro-batches are folded (at most a few releases behind)
        store = ThreadPoolExecutor(1, thread_name_prefix="qv-stream-store")
        behind: deque[asyncio.Future[object]] = deque()
        done = False
        try:
            while not done:
                frames, arrived, done = await self._next_batch(queue, reader, stop)
                self.metrics.queue.set(queue.qsize())
                batch = (
                    pl.concat(frames, how="vertical_relaxed")
                    if len(frames) > 1
                    else frames[0]
                    if frames
                    else _NO_TRADES
                )
                # folding takes a millisecond or two: on the loop, no thread hand-over
                released = self.aggregate(batch)
                fold_cpu = _newest(self.stage_cpu["fold"])
                self.stats.batches += 1
                while self.fresh:  # new symbols: history and bases before their first bars
                    symbols, at = self.fresh.pop(0)
                    behind.append(loop.run_in_executor(store, self.welcome, symbols, at))
                if self.gaps:  # after the bars before it, on the store thread
                    behind.append(loop.run_in_executor(store, self.fill_gaps))
                if released.empty:
                    if arrived is not None:
                        self.emit(released, arrived)  # records the latency only
                else:
                    handed = time.perf_counter()
                    behind.append(
                        loop.run_in_executor(store, self.emit, released, arrived, fold_cpu, handed)
                    )
                while behind and (behind[0].done() or len(behind) > 4):
                    await behind.popleft()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            close = getattr(source, "aclose", None)
            if close is not None:  # the feed's connection closes now, not when collected
                with contextlib.suppress(Exception):
                    await close()
            while behind:
                await behind.popleft()
            await loop.run_in_executor(store, self.flush)
            store.shutdown()
        return self.stats

    async def _next_batch(
        self,
        queue: asyncio.Queue[tuple[float, pl.DataFrame] | None],
        reader: asyncio.Task[None],
        stop: asyncio.Event,
    ) -> tuple[list[pl.DataFrame], float | None, bool]:
        """Return the next micro-batch's frames, when its first arrived, and whether the feed
        is over. It closes `batch_ms` after its first frame, at `batch_rows` trades, or at
        once when a frame reaches the time that closes an open minute (bars to release);
        with no frame for `batch_ms`, it is empty (the clock may close quiet minutes)."""
        window = self.settings.batch_ms / 1000
        try:
            first = await asyncio.wait_for(queue.get(), window)
        except TimeoutError:
            over = stop.is_set() or (reader.done() and queue.empty())
            return [], None, over
        if first is None:
            return [], None, True
        arrived, frame = first
        frames, rows = [frame], frame.height
        deadline = arrived + window
        close_at = self.bars.next_close(frame)
        closes = close_at is not None and _reaches(frame, close_at)
        while rows < self.settings.batch_rows and not closes:
            if queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = queue.get_nowait()
            if item is None:
                return frames, arrived, True
            frames.append(item[1])
            rows += item[1].height
            closes = close_at is not None and _reaches(item[1], close_at)
        return frames, arrived, False


def _utc_series(at: datetime) -> pl.Series:
    """A one-value UTC microsecond column of `at` (from its epoch microseconds when it is
    in UTC: building a datetime value costs ~10x the integer's; else as `utc_lit`)."""
    if at.tzinfo is not UTC and getattr(at.tzinfo, "key", None) != "UTC":
        return pl.select(utc_lit(at)).to_series()
    return pl.Series([(at - _EPOCH) // timedelta(microseconds=1)], dtype=pl.Int64).cast(PL_UTC_TS)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _newest(values: deque[float]) -> float:
    return values[-1] if values else 0.0


def _in_flight(pending: deque[Future[list[int]]], future: Future[list[int]]) -> None:
    """Keep a publish until acked; raise a failed one; wait when too many are in flight."""
    pending.append(future)
    while pending and (pending[0].done() or len(pending) > _IN_FLIGHT):
        pending.popleft().result(timeout=60)


def _canonical(symbol: str | None) -> bool:
    """Say whether a symbol as sent is canonical (`coerce` would neither change nor hold it)."""
    return symbol is not None and symbol == symbol.strip().upper() and not symbol_problem(symbol)


def _reaches(frame: pl.DataFrame, at: datetime) -> bool:
    """Say whether `frame` has a trade at or after `at`."""
    newest = frame["ts"].max() if frame.height else None
    return isinstance(newest, datetime) and newest >= at


_NO_TRADES = pl.DataFrame(schema=TRADE_SCHEMA)


def open_feed(
    source: str,
    symbols: list[str],
    settings: StreamSettings,
    *,
    ws_url: str | None = None,
    api_key: str | None = None,
    rate: float | None = None,
    limit: int | None = None,
    seed: int = 7,
) -> AsyncIterator[pl.DataFrame]:
    """Return the trade feed `source` names: `synthetic` or `finnhub` (WebSocket)."""
    if source == "synthetic":
        return synthetic_trades(
            symbols,
            rate=rate or settings.synthetic_rate,
            seed=seed,
            late_fraction=settings.late_fraction,
            limit=limit,
        )
    if source == "finnhub":
        if not ws_url:
            raise ConfigurationError(
                "the finnhub source needs a WebSocket URL (--ws-url, or"
                " providers.finnhub.base_url of the simulator)"
            )
        return finnhub_trades(FinnhubTradeStream(symbols, api_key=api_key, url=ws_url))
    raise ConfigurationError("unknown trade source (synthetic, finnhub)", source=source)


def _floor_minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)
