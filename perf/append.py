"""Append benchmark: the nightly update and streaming micro-batches, lake vs ArcticDB.

- nightly: a store of N symbols x Y years of daily bars (perf/storage.py's universe, written
  before the clock starts), then the next session's bar for every symbol: lake
  `Platform.write_bars` (validated, history-aware, in the process that holds the store, as
  a service would) vs ArcticDB `Library.append_batch` of the same rows (pandas conversion
  outside the clock), in the same run; `--symbols 500,2000,5000`, `--years 10,20`.
- postgres: the same nightly update by `PostgresStore.upsert` into a store of the first
  universe (`--postgres`).
  `--cache-mb` sizes the lake's partition cache (a service holding the store sizes it so).
- stream: 500 symbols, one session of 1-minute bars stored, then `--batches` micro-batches
  of one new 1-minute bar per symbol (what lands in one second when every symbol's minute
  closes), each through `Platform.write_bars`: latency p50/p95/max and the writing thread's
  CPU time (what a loaded machine does not inflate) and the mean wall time of each pipeline
  stage (`qv_stage_seconds`: validate includes the history read), then up to 200 more
  straight into `ParquetLake.upsert` (the store's share, CPU and wall time: the wall
  includes waits for background merges and folds, which swap under the locks) and the
  validation's history read alone (`ParquetLake.recent`, from tails and deltas); a warm read of one
  symbol's session and of all 500 symbols' last hour before and after (background folds
  running), and after `compact()`; a read of one symbol's session (wall and CPU) and the
  live deltas pending at the start, middle and end of the stream, and the most pending.
  The set-up's heap is frozen before the stream (`gc.freeze`, as `run_daemon` and the API
  do once started: a full collection then walks only what came after; `--no-freeze`).
  Back to back by default (the stress run); `--interval-ms` paces the micro-batches.
Prints one JSON line. Usage: python perf/append.py [--symbols 500,2000] [--years 10]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_avg_1m, median_seconds, print_json_line
from quantivista.config import IngestSettings, StorageSettings
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.platform import Platform
from storage import arcticdb_payloads, next_day, universe


def nightly_lake(frame: pl.DataFrame, root: Path, cache_mb: int | None) -> dict[str, float]:
    """Return the seconds of the nightly update of a lake holding `frame`."""
    per_symbol = frame.height // frame["symbol"].n_unique()
    storage = {} if cache_mb is None else {"storage": StorageSettings(cache_mb=cache_mb)}
    with Platform.open(root, **storage) as p:
        p.write_bars(frame, source="perf", timeframe="1d")
        p.calendar()  # loaded before the clock, as in a running service
        update = next_day(frame)
        t0 = time.perf_counter()
        report = p.write_bars(update, source="perf", timeframe="1d")
        elapsed = time.perf_counter() - t0
        assert report.invalid_records == 0, report
        assert p.bars("S0000").height == per_symbol + 1
        read = median_seconds(lambda: p.bars("S0001", timeframe="1d"), 7)
    return {"lake_s": elapsed, "lake_read_symbol_ms": read * 1e3}


def nightly_arcticdb(frame: pl.DataFrame, root: Path) -> dict[str, Any]:
    """Return the seconds of ArcticDB's `append_batch` of the next session."""
    import arcticdb as adb

    lib = adb.Arctic(f"lmdb://{root}").get_library("bars", create_if_missing=True)
    lib.write_batch(arcticdb_payloads(adb, frame))
    update = arcticdb_payloads(adb, next_day(frame))
    t0 = time.perf_counter()
    lib.append_batch(update)
    elapsed = time.perf_counter() - t0
    assert len(lib.read("S0000").data) == frame.height // frame["symbol"].n_unique() + 1
    return {"arcticdb_s": elapsed, "arcticdb_version": adb.__version__}


def nightly_postgres(frame: pl.DataFrame) -> dict[str, Any]:
    """Return the seconds of `PostgresStore.upsert` of the next session."""
    import psycopg

    from quantivista.config import Settings
    from quantivista.storage.postgres.bars import PostgresStore

    dsn = Settings().services.postgres_dsn.get_secret_value()
    schema = f"qv_perf_{uuid4().hex[:8]}"
    now = datetime.now(UTC)
    store = PostgresStore(dsn, schema)
    try:
        store.upsert(coerce_bars(frame, timeframe="1d", provider="perf", job_id="a",
                                 ingested_at=now))  # fmt: skip
        update = coerce_bars(next_day(frame), timeframe="1d", provider="perf", job_id="b",
                             ingested_at=now + timedelta(seconds=1))  # fmt: skip
        t0 = time.perf_counter()
        stats = store.upsert(update)
        elapsed = time.perf_counter() - t0
        assert stats.inserted == update.height
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return {"postgres_s": elapsed}


def minute_bars(symbols: list[str], ts: list[datetime], seed: int) -> pl.DataFrame:
    """Return one 1-minute bar per symbol and timestamp (valid OHLC)."""
    rng = np.random.default_rng(seed)
    n = len(symbols) * len(ts)
    close = rng.uniform(50, 60, n)
    return pl.DataFrame(
        {
            "symbol": np.repeat(symbols, len(ts)),
            "ts": pl.Series(ts * len(symbols)).cast(pl.Datetime("us", "UTC")),
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": np.full(n, 100.0),
        }
    )


def stream(
    root: Path, batches: int, recent: bool = False, freeze: bool = True, interval_ms: float = 0
) -> dict[str, Any]:
    """Return micro-batch latencies and read times of the streaming run (`recent`: the
    writer keeps what it stored as the next batch's validation history, as a dedicated
    streaming writer does: `ingest.keep_recent_history`; `freeze`: the set-up's heap frozen,
    as a service's start-up heap is)."""
    symbols = [f"S{i:04d}" for i in range(500)]
    open_ = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
    minute = timedelta(minutes=1)
    m1 = Timeframe.parse("1m")
    out: dict[str, Any] = {"keep_recent_history": recent, "interval_ms": interval_ms}
    with Platform.open(root, ingest=IngestSettings(keep_recent_history=recent)) as p:
        session = [open_ + minute * k for k in range(390)]
        p.write_bars(minute_bars(symbols, session, 0), source="perf", timeframe="1m")
        lake = p.runtime.backend.bars

        def reads(label: str) -> None:
            day = (open_, open_ + timedelta(days=1))
            out[f"read_symbol_{label}_ms"] = 1e3 * median_seconds(
                lambda: lake.read(["S0007"], m1, *day), 7
            )
            hour = (open_ + minute * (390 + batches - 60), open_ + timedelta(days=2))
            out[f"read_500_last_hour_{label}_ms"] = 1e3 * median_seconds(
                lambda: lake.read(symbols, m1, *hour), 3
            )

        reads("before")
        if freeze:  # as a service does once started (`run_daemon`, the API's start-up)
            gc.freeze()
        out["gc_frozen"] = freeze

        def read_session() -> pl.DataFrame:
            return lake.read(["S0007"], m1, open_, open_ + timedelta(days=1))

        stages = ("validate", "store", "publish")
        seen = {s: _stage_totals(s) for s in stages}
        times, cpu, store, store_wall, history = [], [], [], [], []
        pending: list[int] = []  # live deltas after each batch (compaction keeping up?)
        checks = {0: "start", batches // 2: "middle", batches - 1: "end"}
        start = time.perf_counter()
        for k in range(batches):
            batch = minute_bars(symbols, [open_ + minute * (390 + k)], k + 1)
            if interval_ms:  # batch k arrives at start + k intervals (now, if behind)
                time.sleep(max(0.0, start + k * interval_ms / 1e3 - time.perf_counter()))
            t0, c0 = time.perf_counter(), time.thread_time()
            p.write_bars(batch, source="perf", timeframe="1m")
            times.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)  # this thread's CPU: the load does not add
            pending.append(len(lake.live_deltas("1m")))
            if k in checks:  # while the stream runs (background merges and folds)
                label = checks[k]
                out[f"read_symbol_{label}_ms"] = 1e3 * median_seconds(read_session, 7)
                out[f"read_symbol_{label}_cpu_ms"] = 1e3 * median_seconds(
                    read_session, 7, warmup=0, clock=time.thread_time
                )
                out[f"deltas_{label}"] = pending[-1]
        out["deltas_max"] = max(pending)
        out["deltas_mean"] = statistics.mean(pending)
        for name in stages:
            total, count = _stage_totals(name)
            out[f"stage_{name}_mean_ms"] = 1e3 * (total - seen[name][0]) / (count - seen[name][1])
        # the store's share: the lake append alone, on rows the pipeline has coerced
        for k in range(batches, batches + min(batches, 200)):
            batch = minute_bars(symbols, [open_ + minute * (390 + k)], k + 1)
            rows = coerce_bars(batch, timeframe="1m", provider="perf", job_id="s",
                               ingested_at=datetime.now(UTC))  # fmt: skip
            first = open_ + minute * (390 + k)
            c0 = time.thread_time()
            lake.recent(symbols, m1, first - timedelta(hours=1), first)
            history.append(time.thread_time() - c0)
            t0, c0 = time.perf_counter(), time.thread_time()
            lake.upsert(rows)
            store.append(time.thread_time() - c0)
            store_wall.append(time.perf_counter() - t0)  # waits for background merges' swaps
        out["deltas_after"] = len(lake.delta_files())
        reads("after")
        assert lake.read(["S0007"], m1).height == 390 + batches + len(store)
        t0 = time.perf_counter()
        lake.compact()
        out["compact_s"] = time.perf_counter() - t0
        reads("compacted")
    times.sort()
    out.update(
        batches=batches,
        p50_ms=1e3 * statistics.median(times),
        p95_ms=1e3 * times[int(0.95 * (len(times) - 1))],
        max_ms=1e3 * times[-1],
        within_50ms=sum(t <= 0.05 for t in times) / len(times),
        cpu_p50_ms=1e3 * statistics.median(cpu),
        cpu_p95_ms=1e3 * sorted(cpu)[int(0.95 * (len(cpu) - 1))],
        store_cpu_p50_ms=1e3 * statistics.median(store),
        store_cpu_p95_ms=1e3 * sorted(store)[int(0.95 * (len(store) - 1))],
        store_wall_p50_ms=1e3 * statistics.median(store_wall),
        store_wall_p95_ms=1e3 * sorted(store_wall)[int(0.95 * (len(store_wall) - 1))],
        store_wall_max_ms=1e3 * max(store_wall),
        history_cpu_p50_ms=1e3 * statistics.median(history),
    )
    return out


def _stage_totals(name: str) -> tuple[float, float]:
    """Return the seconds and count `qv_stage_seconds` holds for a pipeline stage."""
    from quantivista.ops.metrics import REGISTRY

    labels = {"stage": name}
    total = REGISTRY.get_sample_value("qv_stage_seconds_sum", labels) or 0.0
    return total, REGISTRY.get_sample_value("qv_stage_seconds_count", labels) or 0.0


def main() -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", default="500,2000,5000")
    parser.add_argument("--years", default="10")
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--postgres", action="store_true")
    # a process that holds the store (a service) sizes its cache to it; the default 256 MB
    # holds 500 symbols x 10 years of daily bars, not 2,000
    parser.add_argument("--cache-mb", type=int, default=None)
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--recent", action="store_true", help="ingest.keep_recent_history on")
    parser.add_argument("--no-freeze", action="store_true", help="no gc.freeze() after set-up")
    parser.add_argument(
        "--interval-ms",
        type=float,
        default=0,
        help="micro-batches arrive this far apart (0: back to back, the stress run; a live"
        " stream's 1-second batches arrive 1,000 ms apart)",
    )
    args = parser.parse_args()
    out: dict[str, Any] = {"bench": "append", "load_avg_1m": load_avg_1m()}
    out["cache_mb"] = args.cache_mb or StorageSettings().cache_mb
    nightly = []
    for years in [int(y) for y in args.years.split(",")]:
        for symbols in [int(s) for s in args.symbols.split(",") if s]:  # "": stream only
            frame = universe(symbols, years)
            row: dict[str, Any] = {"symbols": symbols, "years": years, "bars": frame.height}
            with tempfile.TemporaryDirectory() as tmp:
                row.update(nightly_lake(frame, Path(tmp) / "lake", args.cache_mb))
                try:
                    row.update(nightly_arcticdb(frame, Path(tmp) / "arctic"))
                    row["lake_vs_arcticdb"] = row["lake_s"] / row["arcticdb_s"]
                except ImportError as exc:
                    row["arcticdb"] = f"not installed: {exc}"
            if args.postgres and symbols == 500 and years == 10:
                row.update(nightly_postgres(frame))
            nightly.append(row)
            del frame
    out["nightly"] = nightly
    if not args.no_stream:
        with tempfile.TemporaryDirectory() as tmp:
            out["stream"] = stream(
                Path(tmp) / "lake",
                args.batches,
                args.recent,
                not args.no_freeze,
                args.interval_ms,
            )
    out["load_avg_1m_end"] = load_avg_1m()
    print_json_line(out, digits=4)


if __name__ == "__main__":
    main()
