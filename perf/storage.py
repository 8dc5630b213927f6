"""Storage benchmark: our lake (validated write path) vs ArcticDB (LMDB), plus PostgreSQL.

Workload: 10 years of daily bars for 500 symbols (about 1.26 M bars).
- lake write: `Platform.write_bars` (coerce + validate + upsert), in bars/s
- arcticdb write: `Library.write_batch` of one pandas frame per symbol (the pandas
  conversion is done before the clock starts: generous to ArcticDB)
- read: all 10 years of one symbol, warm, median of 7 runs
- daily update: the next session's bar for every symbol, appended to the 10 years (the
  nightly job): lake `write_bars` (validated, history-aware) vs ArcticDB `append_batch`
- postgres: `PostgresStore.upsert` of the whole universe into an empty schema (binary COPY +
  one upsert statement), then a range read of one symbol-year, warm, median of 20 runs
Prints one JSON line. Usage: python perf/storage.py [--symbols 500] [--years 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import polars as pl

from _common import load_avg_1m, median_seconds, print_json_line
from quantivista.config import Settings
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.platform import Platform
from quantivista.reference.calendars import get_calendar


def universe(symbols: int, years: int) -> pl.DataFrame:
    """Return `symbols` x `years` of valid daily bars on XNYS sessions."""
    # the years up to 2023 (`next_day` is the first session of 2024)
    sessions = get_calendar("XNYS").sessions(date(2024 - years, 1, 1), date(2023, 12, 31))
    days = len(sessions)
    rng = np.random.default_rng(1)
    n = symbols * days
    steps = rng.normal(0, 0.01, (symbols, days)).cumsum(axis=1)
    close = (rng.uniform(20, 400, symbols)[:, None] * np.exp(steps)).ravel()
    open_ = close * rng.uniform(0.99, 1.01, n)
    high = np.maximum(open_, close) * rng.uniform(1.0, 1.01, n)
    low = np.minimum(open_, close) * rng.uniform(0.99, 1.0, n)
    ts = sessions.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    frame = pl.DataFrame(
        {
            "symbol": np.repeat([f"S{i:04d}" for i in range(symbols)], days),
            "ts": pl.concat([ts] * symbols),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.integers(1_000, 5_000_000, n).astype(np.float64),
        }
    )
    return frame


def next_day(frame: pl.DataFrame) -> pl.DataFrame:
    """Return one bar per symbol on the session after the universe's last one."""
    last = frame.group_by("symbol", maintain_order=True).last()
    day = get_calendar("XNYS").sessions(date(2024, 1, 1), date(2024, 1, 10))[0]
    ts = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return last.with_columns(ts=pl.lit(ts).cast(pl.Datetime("us", "UTC")))


def arcticdb_payloads(adb: Any, frame: pl.DataFrame) -> list[Any]:
    """Return ArcticDB write payloads of `frame`: one pandas frame (indexed by ts) a symbol."""
    cols = ["open", "high", "low", "close", "volume"]
    return [
        adb.WritePayload(str(sym), part.select("ts", *cols).to_pandas().set_index("ts"))
        for (sym,), part in frame.group_by("symbol", maintain_order=True)
    ]


def bench_lake(frame: pl.DataFrame, root: Path) -> dict[str, float]:
    with Platform.open(root) as p:
        t0 = time.perf_counter()
        report = p.write_bars(frame, source="perf", timeframe="1d")
        elapsed = time.perf_counter() - t0
        assert report.invalid_records == 0, report
        read = median_seconds(lambda: p.bars("S0000", timeframe="1d"), 7)
        assert p.bars("S0000").height == frame.height // frame["symbol"].n_unique()
        t0 = time.perf_counter()
        report = p.write_bars(next_day(frame), source="perf", timeframe="1d")
        update = time.perf_counter() - t0
        assert report.invalid_records == 0, report
        assert p.bars("S0000").height == frame.height // frame["symbol"].n_unique() + 1
    return {
        "lake_write_bars_per_s": frame.height / elapsed,
        "lake_read_symbol_ms": read * 1e3,
        "lake_daily_update_s": update,
    }


def bench_arcticdb(frame: pl.DataFrame, root: Path) -> dict[str, Any]:
    try:
        import arcticdb as adb
    except ImportError as exc:
        return {"arcticdb": f"not installed: {exc}"}
    ac = adb.Arctic(f"lmdb://{root}")
    lib = ac.get_library("bars", create_if_missing=True)
    payloads = arcticdb_payloads(adb, frame)
    t0 = time.perf_counter()
    lib.write_batch(payloads)
    elapsed = time.perf_counter() - t0
    read = median_seconds(lambda: lib.read("S0000").data, 7)
    update = arcticdb_payloads(adb, next_day(frame))
    t0 = time.perf_counter()
    lib.append_batch(update)
    update_s = time.perf_counter() - t0
    assert len(lib.read("S0000").data) == frame.height // frame["symbol"].n_unique() + 1
    return {
        "arcticdb_version": adb.__version__,
        "arcticdb_write_bars_per_s": frame.height / elapsed,
        "arcticdb_read_symbol_ms": read * 1e3,
        "arcticdb_daily_update_s": update_s,
    }


def bench_postgres(frame: pl.DataFrame) -> dict[str, Any]:
    try:
        import psycopg

        from quantivista.storage.postgres.bars import PostgresStore
    except ImportError as exc:
        return {"postgres": f"not installed: {exc}"}
    dsn = Settings().services.postgres_dsn.get_secret_value()
    schema = f"qv_perf_{uuid4().hex[:8]}"
    bars = coerce_bars(frame, timeframe="1d", provider="perf", job_id="perf",
                       ingested_at=datetime.now(UTC))  # fmt: skip
    store = PostgresStore(dsn, schema)
    try:
        t0 = time.perf_counter()
        stats = store.upsert(bars)
        elapsed = time.perf_counter() - t0
        assert stats.inserted == bars.height
        with store.pool.connection() as conn:
            conn.execute("ANALYZE bars")
        lo, hi = datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC)
        d1 = Timeframe.parse("1d")
        read = median_seconds(lambda: store.read(["S0000"], d1, lo, hi), 20)
        assert store.read(["S0000"], d1, lo, hi).height == 253
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return {"postgres_load_bars_per_s": bars.height / elapsed, "postgres_read_year_ms": read * 1e3}


def main() -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    args = parser.parse_args()
    frame = universe(args.symbols, args.years)
    out: dict[str, Any] = {"bench": "storage", "load_avg_1m": load_avg_1m()}
    out.update(bars=frame.height, symbols=args.symbols)
    with tempfile.TemporaryDirectory() as tmp:
        out.update(bench_lake(frame, Path(tmp) / "lake"))
        out.update(bench_arcticdb(frame, Path(tmp) / "arctic"))
    out.update(bench_postgres(frame))
    if "arcticdb_write_bars_per_s" in out:
        out["write_ratio_vs_arcticdb"] = (
            out["lake_write_bars_per_s"] / out["arcticdb_write_bars_per_s"]
        )
        out["read_ratio_vs_arcticdb"] = out["arcticdb_read_symbol_ms"] / out["lake_read_symbol_ms"]
    out["load_avg_1m_end"] = load_avg_1m()
    print_json_line(out, digits=3)


if __name__ == "__main__":
    main()
