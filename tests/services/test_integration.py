"""The integration consumer: raw bars -> store once -> enriched bars; poison to dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from quantivista.bus.events import BarBatch
from quantivista.bus.frames import from_ipc, to_ipc
from quantivista.bus.topics import ENRICHED_BARS, raw_bars
from quantivista.clock import TestClock
from quantivista.config import Settings, StorageSettings
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.ops.metrics import REGISTRY
from quantivista.reference.instruments import InstrumentMaster
from quantivista.runtime import Runtime
from quantivista.services import integration

T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
TOPIC = raw_bars("1m")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path / "data",
        storage=StorageSettings(write_threads=1),
        bus={"url": "memory://", "codec": "protobuf"},
        integrate={"batch": 3, "reporting_currency": "USD", "max_deliver": 2},
    )
    with Runtime.from_settings(settings, clock=TestClock(T0)) as rt:
        yield rt


def minute_bars(symbol: str, start: int, count: int, price: float = 10.0) -> pl.DataFrame:
    ts = [T0 + timedelta(minutes=start + i) for i in range(count)]
    return coerce_bars(
        pl.DataFrame(
            {
                "symbol": symbol, "ts": ts, "open": price, "high": price + 1, "low": price - 1,
                "close": price, "volume": 100.0, "provider": "finnhub",
            }
        ),
        timeframe="1m",
    )  # fmt: skip


def publish(runtime: Runtime, frame: pl.DataFrame, *, correction: bool = False) -> int:
    symbol = str(frame["symbol"][0])
    event = BarBatch(occurred_at=T0, source="finnhub", stage="raw", timeframe="1m",
                     rows=frame.height, symbols=[symbol], bars=to_ipc(frame),
                     correction=correction)  # fmt: skip
    value, headers = runtime.codecs.encode(event, "avro", key=symbol)
    return runtime.broker.publish(TOPIC, value, key=symbol, headers=headers)


def drain(runtime: Runtime, group: str = "g") -> int:
    service = runtime.integration_service()
    sub = service.subscribe(TOPIC, group)
    total = 0
    while got := service.step(sub, timeout_s=0.2):
        total += got
    sub.close()
    return total


def stored(runtime: Runtime) -> pl.DataFrame:
    return runtime.backend.bars.read(
        ["AAA", "EUX"], Timeframe.parse("1m"), T0, T0 + timedelta(hours=2)
    ).sort("symbol", "ts")


def enriched(runtime: Runtime) -> pl.DataFrame:
    frames = []
    for message in runtime.broker.read(ENRICHED_BARS):
        event = runtime.codecs.decode(message.value)
        assert isinstance(event, BarBatch) and event.stage == "enriched"
        frames.append(from_ipc(event.bars))
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def test_raw_bars_are_stored_once_and_published_enriched(runtime: Runtime) -> None:
    master = InstrumentMaster(runtime.backend.instruments)
    master.upsert(
        pl.DataFrame({
            "instrument_id": ["I1", "I2"], "name": ["Aaa Inc", "Eux AG"],
            "asset_class": ["equity", "equity"], "currency": ["USD", "EUR"],
            "exchange": ["XNYS", "XETR"], "sector": ["Tech", "Autos"],
            "industry": ["Software", "Cars"],
        }),
        pl.DataFrame({"instrument_id": ["I1", "I2"], "symbol": ["AAA", "EUX"],
                      "valid_from": [date(2000, 1, 1)] * 2, "valid_to": [None, None]}),
    )  # fmt: skip
    runtime.writes.write_bars(  # a daily EURUSD rate the enrichment converts with
        pl.DataFrame({"symbol": ["EURUSD"], "ts": [datetime(2026, 11, 30, tzinfo=UTC)],
                      "open": [1.1], "high": [1.1], "low": [1.1], "close": [1.1],
                      "volume": [0.0]}),
        timeframe="1d",
    )  # fmt: skip
    publish(runtime, minute_bars("AAA", 0, 5))
    publish(runtime, minute_bars("EUX", 0, 5, price=20.0))
    publish(runtime, minute_bars("AAA", 2, 1, price=12.0), correction=True)  # amends minute 2
    runtime.broker.publish(TOPIC, b"\x00garbage", key="AAA")  # no codec reads this
    assert drain(runtime) == 4

    bars = stored(runtime)
    assert bars.height == 10
    assert bars.filter(pl.col("symbol") == "AAA")["close"].to_list() == [10, 10, 12, 10, 10]
    out = enriched(runtime)
    assert out.height == 10
    eux = out.filter(pl.col("symbol") == "EUX").row(0, named=True)
    assert (eux["sector"], eux["industry"], eux["exchange"], eux["currency"]) == (
        "Autos", "Cars", "XETR", "EUR",
    )  # fmt: skip
    assert eux["fx_rate"] == pytest.approx(1.1) and eux["close_rc"] == pytest.approx(22.0)
    aaa = out.filter(pl.col("symbol") == "AAA").row(0, named=True)
    assert (aaa["fx_rate"], aaa["close_rc"], aaa["adj_factor"]) == (1.0, 10.0, 1.0)
    assert aaa["source"].startswith("finnhub via bars.raw.1m:")
    dead = list(runtime.broker.read("dlq." + TOPIC))
    assert len(dead) == 1
    assert "unknown schema id" in dead[0].headers["qv-dlq-error"]
    assert dead[0].headers["qv-dlq-offset"] == "4"
    lag = REGISTRY.get_sample_value(  # the shared name the QvConsumerLag alert reads
        "qv_consumer_lag_messages", {"consumer": runtime.settings.integrate.group, "topic": TOPIC}
    )
    assert lag == 0  # drained

    # the same messages again (a new group replays the topic): the store does not change
    before = stored(runtime)
    drain(runtime, group="again")
    assert stored(runtime).equals(before)
    assert stored(runtime).height == 10


def test_a_failing_store_redelivers_then_dead_letters(runtime: Runtime) -> None:
    publish(runtime, minute_bars("AAA", 0, 2))
    service = runtime.integration_service()
    sub = service.subscribe(TOPIC, "g")
    broken = runtime.backend.bars.upsert

    def fail(frame: pl.DataFrame) -> object:
        from quantivista.errors import StorageError

        raise StorageError("disk full")

    runtime.backend.bars.upsert = fail  # type: ignore[method-assign]
    try:
        service.step(sub, timeout_s=0.5)  # delivery 1: nacked
        service.step(sub, timeout_s=2.0)  # delivery 2 = max_deliver: dead-lettered
    finally:
        runtime.backend.bars.upsert = broken  # type: ignore[method-assign]
    assert service.step(sub, timeout_s=0.3) == 0
    dead = list(runtime.broker.read("dlq." + TOPIC))
    assert [m.headers["qv-dlq-error"] for m in dead] == ["StorageError: disk full"]
    # replaying the dead letter puts it back; the consumer stores it now
    result = runtime.distribution.replay_dead_letters(TOPIC)
    assert result.published == 1
    while service.step(sub, timeout_s=0.3):
        pass
    assert stored(runtime).height == 2


def test_bars_without_a_full_key_go_to_dead_letters_alone(runtime: Runtime) -> None:
    publish(runtime, minute_bars("AAA", 0, 2))
    keyless = minute_bars("EUX", 0, 3).with_columns(  # validation refuses a null ts
        ts=pl.when(pl.int_range(pl.len()) == 1).then(None).otherwise(pl.col("ts"))
    )
    publish(runtime, keyless)
    publish(runtime, minute_bars("EUX", 5, 2, price=20.0))
    assert drain(runtime) == 3  # one batch (integrate.batch = 3), its good messages stored
    assert stored(runtime)["symbol"].to_list() == ["AAA", "AAA", "EUX", "EUX"]
    (dead,) = runtime.broker.read("dlq." + TOPIC)
    assert dead.headers["qv-dlq-offset"] == "2"  # the second published
    assert dead.headers["qv-dlq-reason"] == "schema"
    assert dead.headers["qv-dlq-error"].startswith("SchemaError: symbol, timeframe and ts must")
    assert "'ts': 1" in dead.headers["qv-dlq-error"]


def test_the_lag_is_read_from_the_broker_at_most_every_few_seconds_and_once_caught_up(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A topic's end costs a round trip per partition: not one per batch of a busy consumer."""
    for minute in range(9):  # 3 batches of 3
        publish(runtime, minute_bars("AAA", minute, 1))
    reads: list[str] = []
    last_offset = runtime.broker.last_offset

    def counted(topic: str) -> int:
        reads.append(topic)
        return last_offset(topic)

    monkeypatch.setattr(runtime.broker, "last_offset", counted)
    monkeypatch.setattr(integration, "LAG_EVERY_S", 600.0)  # however slow the machine
    service = runtime.integration_service()
    sub = service.subscribe(TOPIC, "lag")
    assert [service.step(sub, timeout_s=0.2) for _ in range(3)] == [3, 3, 3]
    assert reads == [TOPIC]  # the first batch only: the next ones came too soon
    lag = {"consumer": runtime.settings.integrate.group, "topic": TOPIC}
    assert REGISTRY.get_sample_value("qv_consumer_lag_messages", lag) == 6  # as read then
    assert service.step(sub, timeout_s=0.2) == 0  # caught up: read once more, now 0
    assert service.step(sub, timeout_s=0.2) == 0  # and not again while it stays 0
    assert reads == [TOPIC, TOPIC]
    assert REGISTRY.get_sample_value("qv_consumer_lag_messages", lag) == 0
    sub.close()
