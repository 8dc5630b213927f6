"""`qv integrate` tells permanent from transient failures: a message that no retry mends goes
to the dead letters alone, at once, with its reason; its batch's good messages are stored and
published once; a store that is away redelivers the batch, which is then applied once.

Each test runs on the in-memory broker and on the NATS server (a stream prefix of its own).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import polars as pl
import psycopg
import pytest
from typer.testing import CliRunner

from quantivista.bus.base import Message
from quantivista.bus.events import BarBatch
from quantivista.bus.frames import from_ipc, to_ipc
from quantivista.bus.topics import ENRICHED_BARS, raw_bars
from quantivista.cli import app
from quantivista.clock import TestClock
from quantivista.config import Settings, StorageSettings
from quantivista.errors import StorageError
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.reference.instruments import InstrumentMaster
from quantivista.runtime import Runtime
from quantivista.services.distribution import describe
from quantivista.services.integration import IntegrationService

T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
TOPIC = raw_bars("1m")
DLQ = "dlq." + TOPIC


@pytest.fixture(params=["memory", pytest.param("nats", marks=pytest.mark.nats)])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    url = "memory://"
    if request.param == "nats":
        url = f"{request.getfixturevalue('nats_url')}?prefix=integdlq{uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path / "data",
        storage=StorageSettings(write_threads=1),
        bus={"url": url, "codec": "avro"},
        integrate={"batch": 3, "reporting_currency": "USD", "max_deliver": 3},
    )
    with Runtime.from_settings(settings, clock=TestClock(T0)) as rt:
        master = InstrumentMaster(rt.backend.instruments)
        master.upsert(  # AAA and EUX convert; JPN has no JPYUSD series; NOC an instrument
            pl.DataFrame({  # the master does not hold (I9)
                "instrument_id": ["I1", "I2", "I3"], "name": ["Aaa Inc", "Eux AG", "Jpn KK"],
                "asset_class": "equity", "currency": ["USD", "EUR", "JPY"],
                "exchange": ["XNYS", "XETR", "XTKS"], "sector": "Tech", "industry": "Software",
            }),
            pl.DataFrame({"instrument_id": ["I1", "I2", "I3", "I9"],
                          "symbol": ["AAA", "EUX", "JPN", "NOC"],
                          "valid_from": [date(2000, 1, 1)] * 4, "valid_to": [None] * 4}),
        )  # fmt: skip
        rate("EURUSD", 1.1)(rt)
        yield rt
        if request.param == "nats":
            for topic in rt.broker.topics():
                rt.broker.delete_topic(topic)


def rate(pair: str, value: float) -> Callable[[Runtime], None]:
    """Store a daily FX rate the day before T0 (what the enrichment converts with)."""

    def write(runtime: Runtime) -> None:
        runtime.writes.write_bars(
            pl.DataFrame({"symbol": [pair], "ts": [datetime(2026, 11, 30, tzinfo=UTC)],
                          "open": [value], "high": [value], "low": [value], "close": [value],
                          "volume": [0.0]}),
            timeframe="1d",
        )  # fmt: skip

    return write


def minute_bars(symbol: str, count: int = 2, price: float = 10.0) -> pl.DataFrame:
    ts = [T0 + timedelta(minutes=i) for i in range(count)]
    return coerce_bars(
        pl.DataFrame({"symbol": symbol, "ts": ts, "open": price, "high": price + 1,
                      "low": price - 1, "close": price, "volume": 100.0, "provider": "finnhub"}),
        timeframe="1m",
    )  # fmt: skip


def publish(runtime: Runtime, frame: pl.DataFrame, symbol: str | None = None) -> int:
    symbol = symbol or str(frame["symbol"][0])
    event = BarBatch(occurred_at=T0, source="finnhub", stage="raw", timeframe="1m",
                     rows=frame.height, symbols=[symbol], bars=to_ipc(frame))  # fmt: skip
    value, headers = runtime.codecs.encode(event, "avro", key=symbol)
    runtime.broker.create_topic(TOPIC, partitions=4)
    return runtime.broker.publish(TOPIC, value, key=symbol, headers=headers)


def drain(service: IntegrationService, group: str = "g", *, idle: int = 3) -> int:
    """Step until `idle` empty fetches in a row (redeliveries come back after 1 s)."""
    sub = service.subscribe(TOPIC, group)
    total, empty = 0, 0
    while empty < idle:
        got = service.step(sub, timeout_s=0.5)
        total += got
        empty = 0 if got else empty + 1
    sub.close()
    return total


def stored(runtime: Runtime, *symbols: str) -> pl.DataFrame:
    return runtime.backend.bars.read(
        list(symbols), Timeframe.parse("1m"), T0, T0 + timedelta(hours=1)
    ).sort("symbol", "ts")


def enriched(runtime: Runtime) -> pl.DataFrame:
    if ENRICHED_BARS not in runtime.broker.topics():
        return pl.DataFrame(schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")})
    frames = [from_ipc(runtime.codecs.decode(m.value).bars)  # type: ignore[attr-defined]
              for m in runtime.broker.read(ENRICHED_BARS)]  # fmt: skip
    return pl.concat(frames, how="diagonal_relaxed").sort("symbol", "ts")


def letters(runtime: Runtime) -> list[Message]:
    return list(runtime.broker.read(DLQ)) if DLQ in runtime.broker.topics() else []


def garbage(runtime: Runtime) -> int:
    runtime.broker.create_topic(TOPIC, partitions=4)
    return runtime.broker.publish(TOPIC, b"\x00garbage", key="BAD")


def wrong_type(runtime: Runtime) -> int:  # close as text: no coercion makes it a price
    return publish(runtime, minute_bars("EUX").with_columns(pl.col("close").cast(pl.String)))


def unknown_timeframe(runtime: Runtime) -> int:
    return publish(runtime, minute_bars("EUX").with_columns(timeframe=pl.lit("7x")))


def no_fx_rate(runtime: Runtime) -> int:  # JPY, and no JPYUSD series stored
    return publish(runtime, minute_bars("JPN", price=1500.0))


def no_currency(runtime: Runtime) -> int:  # NOC maps to an instrument the master lacks
    return publish(runtime, minute_bars("NOC"))


# (how to publish the bad message, its reason, the error's type, words of the error)
PERMANENT = {
    "decode": (garbage, "decode", "DecodeError", "unknown schema id"),
    "wrong_column_type": (wrong_type, "schema", "SchemaError", "column 'close' must be numeric"),
    "unknown_timeframe": (unknown_timeframe, "schema", "InvalidTimeframeError", "7x"),
    "reference": (no_currency, "reference", "NotFoundError", "no currency for the instrument"),
    "fx_no_rate": (no_fx_rate, "fx", "NotFoundError", "no FX rate to USD"),
}


@pytest.mark.parametrize("case", list(PERMANENT))
def test_a_permanent_failure_dead_letters_its_message_alone_at_once(
    runtime: Runtime, case: str
) -> None:
    bad, reason, kind, words = PERMANENT[case]
    publish(runtime, minute_bars("AAA"))
    offset = bad(runtime)
    publish(runtime, minute_bars("EUX", price=20.0))
    service = runtime.integration_service()
    assert drain(service) == 3  # one batch, delivered once

    (letter,) = letters(runtime)
    assert letter.headers["qv-dlq-offset"] == str(offset) == "2"
    assert letter.headers["qv-dlq-deliveries"] == "1"  # at once, not after max_deliver
    assert letter.headers["qv-dlq-reason"] == reason
    assert letter.headers["qv-dlq-error"].startswith(f"{kind}: ")
    assert words in letter.headers["qv-dlq-error"]
    shown = describe(letter, runtime.codecs)  # what `qv dlq show` prints
    assert (shown["reason"], shown["error"]) == (reason, letter.headers["qv-dlq-error"])
    assert service.stats.retried == 0 and service.stats.dead_lettered == 1

    good = stored(runtime, "AAA", "EUX")
    assert good["symbol"].to_list() == ["AAA", "AAA", "EUX", "EUX"]
    assert good.filter(pl.col("symbol") == "EUX")["close"].to_list() == [20.0, 20.0]
    out = enriched(runtime)  # the good bars, each published exactly once
    assert out.select("symbol", "ts").equals(good.select("symbol", "ts"))
    assert out["close_rc"].to_list() == [10.0, 10.0, 22.0, 22.0]


def test_two_bad_messages_of_different_kinds_each_go_alone(runtime: Runtime) -> None:
    wrong_type(runtime)
    publish(runtime, minute_bars("AAA"))
    no_fx_rate(runtime)
    service = runtime.integration_service()
    assert drain(service) == 3
    reasons = {m.headers["qv-dlq-offset"]: m.headers["qv-dlq-reason"] for m in letters(runtime)}
    assert reasons == {"1": "schema", "3": "fx"}
    assert enriched(runtime)["symbol"].to_list() == ["AAA", "AAA"]
    assert service.stats.retried == 0


def test_bad_rows_inside_a_good_message_are_quarantined_not_dead_lettered(
    runtime: Runtime,
) -> None:
    frame = minute_bars("AAA", count=3).with_columns(  # minute 1: high below low
        high=pl.when(pl.int_range(pl.len()) == 1).then(1.0).otherwise(pl.col("high"))
    )
    publish(runtime, frame)
    assert drain(runtime.integration_service()) == 1
    assert letters(runtime) == []
    assert stored(runtime, "AAA")["ts"].to_list() == [T0, T0 + timedelta(minutes=2)]
    held = runtime.quality.quarantine(["AAA"])
    assert held["ts"].to_list() == [T0 + timedelta(minutes=1)]
    assert held["reason"][0]
    assert enriched(runtime).height == 2


def test_a_store_away_once_redelivers_the_batch_and_applies_it_once(runtime: Runtime) -> None:
    publish(runtime, minute_bars("AAA"))
    garbage(runtime)  # dead-lettered at once, not again when the others come back
    publish(runtime, minute_bars("EUX", price=20.0))
    upsert = runtime.backend.bars.upsert
    calls: list[int] = []

    def away_once(frame: pl.DataFrame) -> object:
        calls.append(frame.height)
        if len(calls) == 1:
            raise StorageError("could not connect to the store")
        return upsert(frame)

    runtime.backend.bars.upsert = away_once  # type: ignore[method-assign]
    try:
        service = runtime.integration_service()
        assert drain(service) == 3 + 2  # the batch, then its two good messages again
    finally:
        runtime.backend.bars.upsert = upsert  # type: ignore[method-assign]
    assert service.stats.retried == 2
    assert [m.headers["qv-dlq-offset"] for m in letters(runtime)] == ["2"]
    good = stored(runtime, "AAA", "EUX")
    assert good.height == 4
    out = enriched(runtime)
    assert out.select("symbol", "ts").equals(good.select("symbol", "ts"))  # once each


def test_a_dead_letter_replayed_after_the_fix_is_applied(runtime: Runtime, tmp_path: Path) -> None:
    publish(runtime, minute_bars("AAA"))
    no_fx_rate(runtime)
    service = runtime.integration_service()
    drain(service)
    (letter,) = letters(runtime)
    assert letter.headers["qv-dlq-reason"] == "fx"
    assert enriched(runtime)["symbol"].to_list() == ["AAA", "AAA"]

    rate("JPYUSD", 0.0065)(runtime)  # the fix: the missing rate
    if runtime.broker.url.startswith("nats"):  # `qv dlq show`, `qv dlq replay`, a process apart
        cli = ["--data-dir", str(tmp_path / "data")]  # the consumer's own settings
        shown = CliRunner().invoke(app, [*cli, "dlq", "show", TOPIC, "--bus", runtime.broker.url])
        assert shown.exit_code == 0, shown.output
        (row,) = [json.loads(line) for line in shown.output.splitlines() if line[:1] == "{"]
        assert (row["reason"], row["offset"]) == ("fx", 1)
        assert row["error"].startswith("NotFoundError: no FX rate to USD")
        back = CliRunner().invoke(app, [*cli, "dlq", "replay", TOPIC, "--bus", runtime.broker.url])
        assert back.exit_code == 0, back.output
        assert json.loads(back.output.splitlines()[-1])["published"] == 1
    else:
        assert runtime.distribution.replay_dead_letters(TOPIC).published == 1
    drain(service)
    assert len(letters(runtime)) == 1  # no new letter
    jpn = enriched(runtime).filter(pl.col("symbol") == "JPN")
    assert jpn["close_rc"].to_list() == pytest.approx([9.75, 9.75])
    assert stored(runtime, "JPN").height == 2  # stored once (the first try stored it too)


# -- PostgreSQL: the store away (the schema renamed), the store refusing a value -------------
@pytest.fixture
def pg_runtime(tmp_path: Path, postgres_dsn: str, nats_url: str) -> Iterator[Runtime]:
    schema = f"qv_integdlq_{uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path / "data",
        storage={"backend": "postgres", "postgres_schema": schema, "write_threads": 1},
        bus={"url": f"{nats_url}?prefix=integdlq{uuid4().hex[:8]}", "codec": "avro"},
        integrate={"batch": 3, "reporting_currency": "USD", "max_deliver": 3},
    )  # type: ignore[arg-type]
    try:
        with Runtime.from_settings(settings, clock=TestClock(T0)) as rt:
            rt.schema = schema  # type: ignore[attr-defined]
            yield rt
            for topic in rt.broker.topics():
                rt.broker.delete_topic(topic)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            for name in (schema, f"{schema}_away"):
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.mark.postgres
@pytest.mark.nats
def test_postgres_away_redelivers_the_batch_and_applies_it_once(
    pg_runtime: Runtime, postgres_dsn: str
) -> None:
    runtime = pg_runtime
    schema = runtime.schema  # type: ignore[attr-defined]
    publish(runtime, minute_bars("AAA"))
    publish(runtime, minute_bars("EUX", price=20.0))
    service = runtime.integration_service()
    sub = service.subscribe(TOPIC, "g")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'ALTER SCHEMA "{schema}" RENAME TO "{schema}_away"')
        try:
            assert service.step(sub, timeout_s=2.0) == 2  # the store is away: nacked
        finally:
            conn.execute(f'ALTER SCHEMA "{schema}_away" RENAME TO "{schema}"')
    assert service.stats.retried == 2 and letters(runtime) == []
    sub.close()
    assert drain(service) == 2  # redelivered and applied now
    good = stored(runtime, "AAA", "EUX")
    assert good.height == 4
    assert enriched(runtime).select("symbol", "ts").equals(good.select("symbol", "ts"))


@pytest.mark.postgres
@pytest.mark.nats
def test_postgres_refusing_a_value_dead_letters_that_message_alone(pg_runtime: Runtime) -> None:
    runtime = pg_runtime
    publish(runtime, minute_bars("AAA"))
    publish(runtime, minute_bars("BBB").with_columns(provider=pl.lit("fin\x00hub")))
    publish(runtime, minute_bars("EUX", price=20.0))
    service = runtime.integration_service()
    assert drain(service) == 3
    (letter,) = letters(runtime)
    assert letter.headers["qv-dlq-offset"] == "2"
    assert letter.headers["qv-dlq-reason"] == "store"
    assert letter.headers["qv-dlq-error"].startswith("StorageRejectedError: ")
    good = stored(runtime, "AAA", "BBB", "EUX")
    assert good["symbol"].to_list() == ["AAA", "AAA", "EUX", "EUX"]
    assert enriched(runtime).select("symbol", "ts").equals(good.select("symbol", "ts"))


@pytest.mark.parametrize(  # the in-memory broker takes any size
    "runtime", [pytest.param("nats", marks=pytest.mark.nats)], indirect=True
)
def test_an_enriched_event_larger_than_nats_takes_dead_letters_its_message_alone(
    runtime: Runtime,
) -> None:
    limit = runtime.broker.max_message_bytes()
    assert limit is not None
    big = minute_bars("EUX", count=6000, price=20.0)  # enriched, the columns more than double
    publish(runtime, minute_bars("AAA"))
    publish(runtime, big)
    publish(runtime, minute_bars("ZZZ"))  # not in the master: the reporting currency
    assert len(to_ipc(big)) < limit - 2048 < 2 * len(to_ipc(big))  # it went in, raw
    service = runtime.integration_service()
    assert drain(service) == 3
    (letter,) = letters(runtime)
    assert letter.headers["qv-dlq-offset"] == "2"
    assert letter.headers["qv-dlq-reason"] == "publish"
    assert letter.headers["qv-dlq-error"].startswith("MessageTooLargeError: ")
    assert enriched(runtime)["symbol"].to_list() == ["AAA", "AAA", "ZZZ", "ZZZ"]  # once
    assert stored(runtime, "EUX").height == 60  # stored before the publish (the first hour)
