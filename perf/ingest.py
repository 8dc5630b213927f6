"""Benchmark the embedded write and read paths (issue 2). Prints one JSON line.

- write: `Platform.write_bars` (coerce + validate + upsert + quarantine + report) of a
  simulated universe of >= 2 million daily bars into an empty lake, against a plain
  pyarrow zstd Parquet write of the same table (the floor any Parquet store pays);
- read: 10 years of daily bars of one symbol through `Platform.bars`, warm, median of many.

Run: `make perf` or `.venv/bin/python perf/ingest.py [--symbols 500]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

import quantivista as qv
from quantivista.model.schema import coerce_bars
from quantivista.providers.simulator import SimulatedMarket

AS_OF = date(2026, 11, 23)


def universe(symbols: int) -> pl.DataFrame:
    market = SimulatedMarket(seed=1, universe_size=symbols, as_of=AS_OF)
    names = market.symbols(date(2026, 11, 20))
    frames = [market.daily(s, "2010-01-01", "2026-11-20") for s in names]
    return coerce_bars(pl.concat(frames), job_id="perf")


def best_of(runs: int, fn: object) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3, help="write repetitions (best is kept)")
    args = parser.parse_args()

    bars = universe(args.symbols)
    table = bars.to_arrow()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def plain() -> None:
            pq.write_table(table, root / "plain.parquet", compression="zstd")

        plain_s = best_of(args.runs, plain)

        counter = iter(range(1_000))

        def ours() -> None:
            with qv.Platform.open(root / f"lake{next(counter)}") as p:
                p.write_bars(bars, source="perf")

        write_s = best_of(args.runs, ours)

        with qv.Platform.open(root / "lake0") as p:
            sym = bars["symbol"][0]
            p.bars(sym, start="2016-11-21", end="2026-11-20")  # warm the page cache
            lat = []
            for _ in range(200):
                t0 = time.perf_counter()
                got = p.bars(sym, start="2016-11-21", end="2026-11-20")
                lat.append(time.perf_counter() - t0)
            read_rows = got.height
        # the same read straight from the file (OS page cache warm, no partition cache)
        with qv.Platform.open(root / "lake0", storage={"cache_mb": 0}) as p:
            p.bars(sym, start="2016-11-21", end="2026-11-20")
            lat_file = []
            for _ in range(200):
                t0 = time.perf_counter()
                p.bars(sym, start="2016-11-21", end="2026-11-20")
                lat_file.append(time.perf_counter() - t0)

    result = {
        "bench": "ingest",
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "bars": bars.height,
        "symbols": bars["symbol"].n_unique(),
        "write_bars_s": round(write_s, 3),
        "write_bars_per_s": round(bars.height / write_s),
        "plain_pyarrow_zstd_s": round(plain_s, 3),
        "plain_pyarrow_zstd_bars_per_s": round(bars.height / plain_s),
        "ratio_to_plain": round(plain_s / write_s, 2),
        "read_10y_daily_rows": read_rows,
        "read_10y_daily_ms_median": round(statistics.median(lat) * 1000, 3),
        "read_10y_daily_ms_p95": round(sorted(lat)[int(len(lat) * 0.95)] * 1000, 3),
        "read_10y_daily_from_file_ms_median": round(statistics.median(lat_file) * 1000, 3),
        "targets": {"write_bars_per_s": 1_000_000, "ratio_to_plain": 0.5, "read_ms": 2.0},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
