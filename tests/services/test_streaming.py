"""The real-time pipeline: trades -> bars -> validate -> store -> topics, in one process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from quantivista.bus.events import BarBatch, BarsIngested, TradesBatch
from quantivista.bus.frames import from_ipc
from quantivista.bus.topics import INGESTION_EVENTS, NORMALIZED_BARS, raw_bars, trades
from quantivista.clock import TestClock
from quantivista.config import Settings, SimulatorServerSettings, StorageSettings
from quantivista.model.schema import PL_UTC_TS, coerce_actions
from quantivista.model.timeframe import Timeframe
from quantivista.pipeline.messages import BatchId
from quantivista.pipeline.stages import coerce, history_for
from quantivista.processing.trade_bars import TRADE_SCHEMA, Released
from quantivista.providers.simulator.server import run_simulator
from quantivista.runtime import Runtime
from quantivista.services.streaming import _utc_series, open_feed

T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path / "data",
        storage=StorageSettings(write_threads=1),
        bus={"url": "memory://", "codec": "avro"},
        stream={"lateness_s": 1.0, "idle_s": 3600.0},
    )
    with Runtime.from_settings(settings, clock=TestClock(T0)) as rt:
        yield rt


def trade_frame(rows: list[tuple[str, float, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "ts": [T0 + timedelta(seconds=r[1]) for r in rows],
            "price": [r[2] for r in rows],
            "size": [r[3] for r in rows],
            "provider": ["finnhub"] * len(rows),
        },
        schema=TRADE_SCHEMA,
    )


def published_bars(runtime: Runtime, topic: str = NORMALIZED_BARS) -> list[BarBatch]:
    """The bar batches on `topic`: one per partition and release, keyed by its first symbol."""
    out = []
    for message in runtime.broker.read(topic):
        event = runtime.codecs.decode(message.value)
        assert isinstance(event, BarBatch)
        assert message.key == event.symbols[0] and message.headers["qv-symbols"] == ",".join(
            event.symbols
        )
        assert sorted(from_ipc(event.bars)["symbol"].unique()) == event.symbols
        out.append(event)
    return out


def published_rows(runtime: Runtime, topic: str = NORMALIZED_BARS) -> pl.DataFrame:
    frames = [from_ipc(e.bars).with_columns(correction=e.correction, stage=pl.lit(e.stage))
              for e in published_bars(runtime, topic)]  # fmt: skip
    return pl.concat(frames, how="diagonal_relaxed").sort("symbol", "ts", "correction")


def stored(runtime: Runtime, symbols: list[str]) -> pl.DataFrame:
    return runtime.backend.bars.read(
        symbols, Timeframe.parse("1m"), T0 - timedelta(hours=1), T0 + timedelta(hours=1)
    ).sort("symbol", "ts")


def test_trades_become_stored_and_published_bars_and_late_trades_corrections(
    runtime: Runtime,
) -> None:
    service = runtime.stream_service("finnhub")
    service.process(trade_frame([("AAPL", 1, 100.0, 10), ("MSFT", 2, 400.0, 5),
                                 ("AAPL", 40, 101.0, 10)]))  # fmt: skip
    assert published_bars(runtime) == [] and stored(runtime, ["AAPL"]).is_empty()
    out = service.process(trade_frame([("AAPL", 62, 102.0, 1)]))  # watermark 61 s: minute 0 ends
    assert out.bars["symbol"].to_list() == ["AAPL", "MSFT"]
    first = stored(runtime, ["AAPL", "MSFT"])
    assert first.select("symbol", "open", "high", "low", "close", "volume").rows() == [
        ("AAPL", 100.0, 101.0, 100.0, 101.0, 20.0),
        ("MSFT", 400.0, 400.0, 400.0, 400.0, 5.0),
    ]
    # as built on bars.raw.1m, validated and stored on bars.normalized: the same bars
    for topic, stage in ((raw_bars("1m"), "raw"), (NORMALIZED_BARS, "normalized")):
        rows = published_rows(runtime, topic)
        assert rows.select("symbol", "close", "correction", "stage").rows() == [
            ("AAPL", 101.0, False, stage), ("MSFT", 400.0, False, stage),
        ]  # fmt: skip
    normalized = published_rows(runtime).drop("correction", "stage")
    assert normalized.equals(first.select(normalized.columns))  # the topic holds the store

    # a late AAPL trade in minute 0: the stored bar is amended and a correction goes out
    service.process(trade_frame([("AAPL", 50, 99.0, 4)]))
    amended = stored(runtime, ["AAPL"]).row(0, named=True)
    assert (amended["low"], amended["close"], amended["volume"]) == (99.0, 99.0, 24.0)
    for topic in (raw_bars("1m"), NORMALIZED_BARS):
        last = published_bars(runtime, topic)[-1]
        assert last.correction and last.symbols == ["AAPL"]
        assert from_ipc(last.bars).select("low", "close", "volume").row(0) == (99.0, 99.0, 24.0)
    assert service.stats.corrections == 1

    # the trades went out per symbol, and the store stage's announcements too
    sent_trades = [runtime.codecs.decode(m.value) for m in runtime.broker.read(trades("finnhub"))]
    assert all(isinstance(e, TradesBatch) for e in sent_trades)
    assert sum(e.rows for e in sent_trades if isinstance(e, TradesBatch)) == 5
    ingested = [runtime.codecs.decode(m.value) for m in runtime.broker.read(INGESTION_EVENTS)]
    assert ingested and all(isinstance(e, BarsIngested) for e in ingested)
    service.close()


def test_a_bad_bar_is_raw_but_quarantined_not_normalized(runtime: Runtime) -> None:
    service = runtime.stream_service("finnhub")
    service.process(trade_frame([("AAPL", 1, 100.0, 10), ("BAD", 2, -5.0, 1)]))
    service.flush()
    assert sorted(published_rows(runtime, raw_bars("1m"))["symbol"]) == ["AAPL", "BAD"]
    assert published_rows(runtime)["symbol"].to_list() == ["AAPL"]
    assert service.stats.quarantined == 1
    assert runtime.backend.quarantine.list()["symbol"].to_list() == ["BAD"]


def test_the_loop_runs_a_finnhub_feed_from_the_simulator(runtime: Runtime) -> None:
    config = SimulatorServerSettings(ws_trade_interval_s=0.01)
    with run_simulator(config) as sim:
        names = sim.market.symbols()[:2]
        feed = open_feed(
            "finnhub", names, runtime.settings.stream, ws_url=sim.ws_url(), api_key="k"
        )
        service = runtime.stream_service("finnhub")

        async def main() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(1.5, stop.set)
            await service.run(feed, stop)

        asyncio.run(main())
    assert service.stats.trades > 20
    # at shutdown the open minute(s) were flushed: stored and published
    sent = published_bars(runtime)
    assert {s for e in sent for s in e.symbols} == set(names)
    now = datetime.now(UTC)
    got = runtime.backend.bars.read(names, Timeframe.parse("1m"), now - timedelta(minutes=5), now)
    assert got["trades"].sum() == service.stats.trades
    assert service.metrics.latency.collect()[0].samples  # latency observed per micro-batch


def test_minutes_missed_in_a_silence_are_back_filled_from_rest(tmp_path: Path) -> None:
    with run_simulator(SimulatorServerSettings()) as sim:
        settings = Settings(
            data_dir=tmp_path / "data",
            storage=StorageSettings(write_threads=1),
            bus={"url": "memory://", "codec": "json"},
            stream={"lateness_s": 1.0, "idle_s": 3600.0},
            providers={"finnhub": {"base_url": sim.base_url("finnhub"), "api_key": "k"}},
        )
        with Runtime.from_settings(settings) as runtime:
            day = sim.market.sessions[-1]
            opened = runtime.calendar().session_table(day, day)["open"][0]
            symbol = sim.market.symbols()[0]
            service = runtime.stream_service("finnhub")

            def at(minutes: float, price: float) -> pl.DataFrame:
                ts = opened + timedelta(minutes=minutes)
                return pl.DataFrame({"symbol": [symbol], "ts": [ts], "price": [price],
                                     "size": [1.0], "provider": ["finnhub"]},
                                    schema=TRADE_SCHEMA)  # fmt: skip

            service.process(at(0.5, 10.0))
            service.process(at(1.5, 10.0))
            # the feed goes quiet for 8 minutes (a disconnect), then trades again
            service.process(at(10.2, 10.0))
            assert service.stats.backfilled == 8
            expected = [opened + timedelta(minutes=m) for m in range(2, 10)]
            stored = runtime.backend.bars.read(
                [symbol], Timeframe.parse("1m"), expected[0], expected[-1] + timedelta(minutes=1)
            )
            assert stored["ts"].to_list() == expected
            rest = [e for e in published_bars(runtime) if e.source == "finnhub-rest"]
            assert sum(e.rows for e in rest) == 8
            # the back-filled bars were stored by the ingestion job: the stream's kept
            # history is read again, with them, for its next release
            assert symbol not in service.recent.covered
            after = stored.head(1).with_columns(ts=pl.lit(opened + timedelta(minutes=11)))
            history = service.recent.history(after)
            assert history is not None and set(expected) <= set(history["ts"].to_list())
            # outside the session nothing is missing
            closed = runtime.calendar().session_table(day, day)["close"][0]
            assert service.missing_minutes(closed, closed + timedelta(hours=3)).is_empty()
            service.close()


def test_the_kept_history_validates_like_a_store_read(tmp_path: Path) -> None:
    """Validation with the stream's own recent bars equals validation with a store read, for
    a series with a spike (its pending flag is decided by the next bar: a new version)."""
    prices = [100.0 + 0.1 * (m % 3) for m in range(30)]
    prices[24] = 160.0  # a spike
    minutes = [
        trade_frame([(s, 60 * m + 5, p * (1 + i), 10.0) for i, s in enumerate(["AAA", "BBB"])])
        for m, p in enumerate(prices)
    ]
    results = []
    for reads in (False, True):
        settings = Settings(
            data_dir=tmp_path / f"data{reads}",
            storage=StorageSettings(write_threads=1),
            bus={"url": "memory://", "codec": "json"},
            stream={"lateness_s": 1.0, "idle_s": 3600.0},
        )
        with Runtime.from_settings(settings, clock=TestClock(T0)) as rt:
            service = rt.stream_service("finnhub")
            if reads:  # every release reads its history from the store
                read = partial(history_for, store=rt.backend.bars, validator=service.validator)
                service.recent.history = read  # type: ignore[method-assign]
            for frame in minutes:
                service.process(frame)
            service.flush()
            results.append(stored(rt, ["AAA", "BBB"]).drop("ingested_at", "job_id"))
    kept, read_back = results
    assert kept.height == 60
    assert (kept["quality_flags"] != 0).any()  # the spike rule fired and was decided
    assert kept.equals(read_back)


def _timed_run(tmp_path: Path, stream: dict[str, object], frames: list[pl.DataFrame]) -> Runtime:
    """Run the loop over `frames` (50 ms apart, then 2 s of silence) with a 3 s timer."""
    settings = Settings(
        data_dir=tmp_path / "data",
        storage=StorageSettings(write_threads=1),
        bus={"url": "memory://", "codec": "avro"},
        stream={"lateness_s": 1.0, "idle_s": 3600.0, "batch_ms": 3000, **stream},
    )
    runtime = Runtime.from_settings(settings, clock=TestClock(T0))
    service = runtime.stream_service("finnhub")

    async def feed():  # type: ignore[no-untyped-def]
        for frame in frames:
            yield frame
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)

    asyncio.run(service.run(feed(), asyncio.Event()))
    runtime.service = service  # type: ignore[attr-defined]
    return runtime


def test_a_trade_that_closes_a_minute_ends_its_micro_batch_at_once(tmp_path: Path) -> None:
    frames = [
        trade_frame([("AAA", 5, 10.0, 1), ("BBB", 6, 20.0, 1)]),
        trade_frame([("AAA", 30, 11.0, 1)]),
        trade_frame([("AAA", 62, 12.0, 1)]),  # the watermark 61 s: minute 0 is over
    ]
    with _timed_run(tmp_path, {}, frames) as runtime:
        service = runtime.service  # type: ignore[attr-defined]
        # minute 0 went out with the third frame, not 3 s (batch_ms) after the first
        assert len(service.bar_latencies) >= 1 and service.bar_latencies[0] < 1.0
        first = published_rows(runtime).filter(pl.col("ts") == T0)
        assert first.select("symbol", "close").rows() == [("AAA", 11.0), ("BBB", 20.0)]


def test_a_micro_batch_closes_at_batch_rows(tmp_path: Path) -> None:
    frames = [trade_frame([("AAA", 5 + i, 10.0, 1)] * 3) for i in range(4)]
    with _timed_run(tmp_path, {"batch_rows": 3}, frames) as runtime:
        service = runtime.service  # type: ignore[attr-defined]
        # every frame is a micro-batch of its own: none waited for the 3 s timer
        assert service.stats.batches >= 4 and max(service.latencies) < 1.0
        assert service.stats.trades == 12


def test_a_new_symbols_first_bars_append_to_a_base_made_when_its_first_trade_came(
    runtime: Runtime,
) -> None:
    service = runtime.stream_service("finnhub")
    lake = runtime.backend.bars
    service.process(trade_frame([("AAA", 5, 10.0, 1), ("BBB", 6, 20.0, 1)]))
    # the first trades gave the symbols' partitions their (empty) base files already
    bases = lake.data_files("1m")
    assert bases and all(lake.read_file(p).is_empty() for p in bases)
    assert not lake.delta_files("1m")
    service.process(trade_frame([("AAA", 62, 11.0, 1)]))  # minute 0 is released
    assert service.stats.bars == 2
    # ... and its bars were appended as a delta, not written into those bases
    assert lake.delta_files("1m") and all(lake.read_file(p).is_empty() for p in bases)
    assert stored(runtime, ["AAA", "BBB"]).select("symbol", "close").rows() == [
        ("AAA", 10.0),
        ("BBB", 20.0),
    ]
    service.close()


def test_folding_goes_on_while_a_releases_bars_are_stored_and_published(
    tmp_path: Path,
) -> None:
    frames = [
        trade_frame([("AAA", 5, 10.0, 1)]),
        trade_frame([("AAA", 62, 11.0, 1)]),  # releases minute 0
        trade_frame([("AAA", 63, 12.0, 1)]),
        trade_frame([("AAA", 64, 13.0, 1)]),
    ]
    folds: list[int] = []  # bar batches published when each micro-batch was folded
    history = None

    def slow_history(bars: pl.DataFrame) -> pl.DataFrame:
        time.sleep(0.3)  # a slow store stage: the next frames arrive meanwhile
        assert history is not None
        return history(bars)

    settings = Settings(
        data_dir=tmp_path / "data",
        storage=StorageSettings(write_threads=1),
        bus={"url": "memory://", "codec": "avro"},
        stream={
            "lateness_s": 1.0,
            "idle_s": 3600.0,
            "batch_ms": 20,
            "batch_rows": 1,
        },
    )
    with Runtime.from_settings(settings, clock=TestClock(T0)) as rt:
        service = rt.stream_service("finnhub")
        history = service.recent.history
        service.recent.history = slow_history  # type: ignore[method-assign]
        fold = service.aggregate

        def counted(batch: pl.DataFrame) -> Released:
            if batch.height:
                folds.append(service.stats.published)
            return fold(batch)

        service.aggregate = counted  # type: ignore[method-assign]

        async def feed():  # type: ignore[no-untyped-def]
            for frame in frames:
                yield frame
                await asyncio.sleep(0.01)

        asyncio.run(service.run(feed(), asyncio.Event()))
        service.close()
    # the frames after the release were folded while its slow store stage ran
    assert folds == [0, 0, 0, 0]
    # the release waited for the store thread no longer than the hop (the thread was idle)
    assert len(service.stage_times["queue"]) == 1 and service.stage_times["queue"][0] < 0.25
    # the release's path CPU (fold + store thread until out) is in its latency, without
    # the store's 0.3 s of waiting
    pairs = list(zip(service.bar_cpu, service.bar_latencies, strict=True))
    assert len(pairs) == 1 and all(0 < cpu < wall - 0.25 for cpu, wall in pairs)


def test_symbols_welcomed_at_the_start_are_not_welcomed_again_at_their_first_trade(
    runtime: Runtime,
) -> None:
    service = runtime.stream_service("finnhub")
    service.welcome(["AAA"], T0)  # what `qv stream` does for its symbols
    assert runtime.backend.bars.data_files("1m")
    service.aggregate(trade_frame([("AAA", 5, 10.0, 1), ("BBB", 6, 20.0, 1)]))
    assert [symbols for symbols, _ in service.fresh] == [["BBB"]]
    service.close()


def test_the_first_welcome_warms_the_validator_and_stores_publishes_nothing(
    runtime: Runtime,
) -> None:
    service = runtime.stream_service("finnhub")
    assert not service.validator._plans
    service.welcome(["AAA", "bbb "], T0)  # an odd symbol is left out of the warm-up
    assert service.validator._plans  # the rule plans the first release would have built
    kept = service.recent.frame
    service.welcome(["CCC"], T0 + timedelta(minutes=1))  # once: later symbols pay nothing
    assert stored(runtime, ["AAA", "BBB", "CCC"]).is_empty()
    assert not published_bars(runtime) and not published_bars(runtime, raw_bars("1m"))
    assert service.recent.frame is kept or service.recent.frame.equals(kept)
    assert service.stats.bars == 0 and runtime.backend.quarantine.count() == 0
    service.close()


def test_each_releases_audit_record_is_written_before_the_next_release_is_stored(
    tmp_path: Path,
) -> None:
    frames = [
        trade_frame([("AAA", 5, 10.0, 1)]),
        trade_frame([("AAA", 62, 11.0, 1)]),  # releases minute 0
        trade_frame([("AAA", 125, 12.0, 1)]),  # releases minute 1
    ]
    order: list[str] = []
    settings = Settings(
        data_dir=tmp_path / "data",
        storage=StorageSettings(write_threads=1),
        bus={"url": "memory://", "codec": "avro"},
        stream={"lateness_s": 1.0, "idle_s": 3600.0, "batch_ms": 20, "batch_rows": 1},
    )
    with Runtime.from_settings(settings, clock=TestClock(T0)) as rt:
        service = rt.stream_service("finnhub")
        upsert, record = rt.backend.bars.upsert, rt.audit.record

        def upserted(bars: pl.DataFrame) -> object:
            order.append("store")
            return upsert(bars)

        def recorded(action: str, *args: object, **kwargs: object) -> None:
            order.append(action)
            record(action, *args, **kwargs)  # type: ignore[arg-type]

        rt.backend.bars.upsert = upserted  # type: ignore[method-assign]
        rt.audit.record = recorded  # type: ignore[method-assign]

        async def feed():  # type: ignore[no-untyped-def]
            for frame in frames:
                yield frame
                await asyncio.sleep(0.01)

        asyncio.run(service.run(feed(), asyncio.Event()))
        service.close()
        # the loop folds on once a release's bars are out, but the store thread writes the
        # release's audit record before it stores the next release (and at the flush)
        assert order == ["store", "bars.ingest"] * 3
        assert rt.audit.query(action="bars.ingest").height == 3


def test_a_release_made_canonical_by_the_stream_equals_what_coerce_makes(
    runtime: Runtime,
) -> None:
    service = runtime.stream_service("finnhub")
    service.process(trade_frame([("AAPL", 1, 100.0, 10), ("MSFT", 2, 400.0, 5),
                                 ("AAPL", 40, 101.5, 10)]))  # fmt: skip
    bars = service.bars.flush().bars
    batch_id = BatchId("stream-x", batch_no=7)
    made = service._as_batch(bars, batch_id)
    assert made is not None
    reference = coerce(bars, batch_id, "finnhub", made.at, "1m")
    assert reference.held is None and made.held is None
    assert made.bars.schema == reference.bars.schema
    assert made.bars.equals(reference.bars)
    assert bars["job_id"].null_count() == bars.height  # the released frame is left as it was
    service.close()


def test_a_symbol_off_the_symbol_rule_goes_through_coerce_to_quarantine(
    runtime: Runtime,
) -> None:
    service = runtime.stream_service("finnhub")
    service.process(trade_frame([("AAPL", 1, 100.0, 10), ("B@D", 2, 5.0, 5)]))
    service.process(trade_frame([("AAPL", 62, 101.0, 1)]))  # minute 0 is released
    assert stored(runtime, ["AAPL"]).select("symbol", "close").rows() == [("AAPL", 100.0)]
    held = runtime.backend.quarantine.list()
    assert held.filter(pl.col("symbol") == "B@D")["rule"].to_list() == ["invalid_symbol"]
    assert service.stats.quarantined == 1
    service.close()


def test_known_actions_are_read_again_when_the_action_store_changes(runtime: Runtime) -> None:
    service = runtime.stream_service("finnhub")
    service.process(trade_frame([("AAPL", 1, 100.0, 10)]))
    assert service._known_actions().is_empty()
    split = coerce_actions(
        pl.DataFrame({"symbol": ["AAPL"], "action_type": ["split"], "ex_date": [T0.date()],
                      "ratio": [4.0]}), provider="test",
    )  # fmt: skip
    runtime.backend.actions.upsert(split)
    assert service._known_actions()["ratio"].to_list() == [4.0]
    service.process(trade_frame([("MSFT", 2, 400.0, 5)]))  # a new symbol: read again
    service._known_actions()
    assert service._actions is not None and service._actions[0][1] == 2
    service.close()


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=ZoneInfo("UTC")),  # polars' zone
        datetime(2026, 1, 2, 3, 4, 5),  # naive: polars' reading
    ],
)
def test_a_release_lineage_time_is_the_datetime_literal_it_replaces(at: datetime) -> None:
    got = _utc_series(at)
    assert got.dtype == PL_UTC_TS
    assert got.to_list() == pl.select(pl.lit(at, PL_UTC_TS)).to_series().to_list()
