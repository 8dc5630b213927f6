"""Cold-read benchmark: a fresh process opens the store and reads one symbol, lake vs ArcticDB.

Stores, built once per run in a temporary directory (the OS file cache is warm afterwards):
- daily: 500 symbols x 10 years (about 1.26 M bars), the lake (`ParquetLake.upsert`) and
  ArcticDB (LMDB, one frame per symbol); then 10 sessions of `S0000`'s bucket corrected
  (a second version in history) for the as-of read
- minute: 200 symbols x 1 month (2024-01) of regular-session 1-minute bars, both stores
Then `--runs` rounds, each of fresh processes (lake and ArcticDB alternating). In each the
clock starts after the imports (reported apart as `import_ms`):
- first: open the store and read one symbol x 10 years (`S0000`)
- next: read a second symbol, in another bucket
- warm: read the first symbol again (the lake's partition cache holds it now)
- as_of: a fresh process, open + as-of read of the first symbol before its correction
- minute: a fresh process, open + one symbol x 1 month of 1-minute bars
Then `qv serve`-style: a `--wide` (2,000) symbol x 10 year daily store, `--processes` (4)
fresh processes at once per engine, each reading 100 random symbols; p50 / p95 per read.
Each figure: median and range (ms) of wall time, and the median process CPU time (all
threads), which the machine's load disturbs less. Prints one JSON line with `uptime`'s load.
The lake's daily files are Arrow IPC (the default `storage.daily_format`); `--daily-format
parquet` builds both daily stores with Parquet base files instead (the earlier format).
`--intraday-format` and `--intraday-compression` pick the minute store's month files
(`storage.intraday_format`, `storage.intraday_arrow_compression`; default: the settings').
Usage: python perf/cold_read.py [--runs 5] [--symbols 500] [--years 10] [--row-group-rows N]
       [--daily-format arrow|parquet] [--intraday-format arrow|parquet]
       [--intraday-compression none|lz4|zstd]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

FIRST, SECOND = "S0000", "S0001"  # different buckets of 64 (checked when building)
READS = 100  # random symbols each parallel reader reads
AS_OF = datetime(2030, 1, 1, tzinfo=UTC)  # the correction is stamped later than this


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = _clock()
    return {"ms": (wall - start[0]) * 1e3, "cpu_ms": (cpu - start[1]) * 1e3}


def _random_symbols(mode: str) -> list[str]:
    """Return the symbols a `random-<seed>-<symbols>` child reads, in order."""
    import numpy as np

    _, seed, universe = mode.split("-")
    picks = np.random.default_rng(int(seed)).integers(0, int(universe), READS)
    return [f"S{i:04d}" for i in picks]


def child_lake(root: str, mode: str) -> dict[str, Any]:
    """Run one fresh-process lake read and return its timings."""
    t = _clock()
    from quantivista.model.timeframe import Timeframe
    from quantivista.storage.lake.bars import ParquetLake

    if mode.startswith("random"):
        lake = ParquetLake(Path(root) / "wide" / "lake")
        d1, times = Timeframe.parse("1d"), []
        for symbol in _random_symbols(mode):
            t = _clock()
            assert lake.read([symbol], d1).height
            times.append(_since(t)["ms"])
        return {"times": times}
    out: dict[str, Any] = {"import": _since(t)}
    t = _clock()
    lake = ParquetLake(Path(root) / ("minute" if mode == "minute" else "daily") / "lake")
    if mode == "minute":
        frame = lake.read([FIRST], Timeframe.parse("1m"))
        out["minute"] = _since(t)
        out["rows"] = frame.height
        return out
    if mode == "as_of":
        frame = lake.read([FIRST], Timeframe.parse("1d"), as_of=AS_OF)
        out["as_of"] = _since(t)
        out["rows"] = frame.height
        return out
    d1 = Timeframe.parse("1d")
    frame = lake.read([FIRST], d1)
    out["first"] = _since(t)
    out["rows"] = frame.height
    t = _clock()
    lake.read([SECOND], d1)
    out["next"] = _since(t)
    t = _clock()
    lake.read([FIRST], d1)
    out["warm"] = _since(t)
    return out


def child_arctic(root: str, mode: str) -> dict[str, Any]:
    """Run one fresh-process ArcticDB read and return its timings."""
    t = _clock()
    import arcticdb as adb

    if mode.startswith("random"):
        lib = adb.Arctic(f"lmdb://{Path(root) / 'wide' / 'arctic'}").get_library("bars")
        times = []
        for symbol in _random_symbols(mode):
            t = _clock()
            assert len(lib.read(symbol).data)
            times.append(_since(t)["ms"])
        return {"times": times}
    out: dict[str, Any] = {"import": _since(t)}
    t = _clock()
    name = "minute" if mode == "minute" else "daily"
    lib = adb.Arctic(f"lmdb://{Path(root) / name / 'arctic'}").get_library("bars")
    if mode == "minute":
        frame = lib.read(FIRST).data
        out["minute"] = _since(t)
        out["rows"] = len(frame)
        return out
    if mode == "as_of":
        frame = lib.read(FIRST, as_of=0).data  # the first version: ArcticDB's time travel
        out["as_of"] = _since(t)
        out["rows"] = len(frame)
        return out
    frame = lib.read(FIRST).data
    out["first"] = _since(t)
    out["rows"] = len(frame)
    t = _clock()
    assert len(lib.read(SECOND).data)
    out["next"] = _since(t)
    t = _clock()
    assert len(lib.read(FIRST).data)
    out["warm"] = _since(t)
    return out


def _daily(symbols: int, years: int) -> Any:
    import numpy as np
    import polars as pl

    from quantivista.reference.calendars import get_calendar

    sessions = get_calendar("XNYS").sessions(date(2014, 1, 1), date(2014 + years - 1, 12, 31))
    days, n = len(sessions), symbols * len(sessions)
    rng = np.random.default_rng(1)
    walk = np.exp(rng.normal(0, 0.01, (symbols, days)).cumsum(axis=1))
    close = (rng.uniform(20, 400, symbols)[:, None] * walk).ravel()
    ts = sessions.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.DataFrame(
        {
            "symbol": np.repeat([f"S{i:04d}" for i in range(symbols)], days),
            "ts": pl.concat([ts] * symbols),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.integers(1_000, 5_000_000, n).astype(np.float64),
        }
    )


def _minute(symbols: int) -> Any:
    import numpy as np
    import polars as pl

    days = [d for d in (date(2024, 1, 1) + timedelta(i) for i in range(31)) if d.weekday() < 5]
    stamps = [
        datetime(d.year, d.month, d.day, 14, 30, tzinfo=UTC) + timedelta(minutes=m)
        for d in days
        for m in range(390)
    ]
    ts = pl.Series(stamps, dtype=pl.Datetime("us", "UTC"))
    n = symbols * len(ts)
    close = 100 + np.random.default_rng(2).normal(0, 0.05, n).cumsum()
    return pl.DataFrame(
        {
            "symbol": np.repeat([f"S{i:04d}" for i in range(symbols)], len(ts)),
            "ts": pl.concat([ts] * symbols),
            "open": close,
            "high": close + 0.01,
            "low": close - 0.01,
            "close": close,
            "volume": np.full(n, 100.0),
        }
    )


def build(
    root: Path,
    symbols: int,
    years: int,
    group_rows: int | None,
    daily_format: str = "arrow",
    intraday: dict[str, str] | None = None,  # StorageSettings' intraday_* fields to set
) -> dict[str, Any]:
    """Write the daily and minute stores of both engines; return their sizes."""
    import arcticdb as adb
    import polars as pl

    from quantivista.config import StorageSettings
    from quantivista.model.schema import coerce_bars
    from quantivista.storage.lake.bars import ParquetLake

    settings = StorageSettings(daily_format=daily_format, **(intraday or {}))  # type: ignore[arg-type]
    if group_rows is not None:
        settings = settings.model_copy(update={"row_group_rows": group_rows})

    out: dict[str, Any] = {"arcticdb_version": adb.__version__}
    for name, frame, tf in (
        ("daily", _daily(symbols, years), "1d"),
        ("minute", _minute(200), "1m"),
    ):
        lake = ParquetLake(root / name / "lake", settings)
        assert name != "daily" or lake.bucket(FIRST) != lake.bucket(SECOND)
        at = datetime(2029, 1, 1, tzinfo=UTC)
        lake.upsert(coerce_bars(frame, timeframe=tf, provider="perf", job_id="b", ingested_at=at))
        lib = adb.Arctic(f"lmdb://{root / name / 'arctic'}").get_library(
            "bars", create_if_missing=True
        )
        cols = ["open", "high", "low", "close", "volume"]
        lib.write_batch(
            [
                adb.WritePayload(str(sym), part.select("ts", *cols).to_pandas().set_index("ts"))
                for (sym,), part in frame.group_by("symbol", maintain_order=True)
            ]
        )
        out[f"{name}_bars"] = frame.height
        if name == "daily":  # a correction of FIRST's bucket: history for the as-of read
            bucket = [s for s in frame["symbol"].unique() if lake.bucket(s) == lake.bucket(FIRST)]
            fix = frame.filter(pl.col("symbol").is_in(bucket)).group_by("symbol").tail(10)
            fix = fix.with_columns(close=pl.col("close") + 0.5)
            later = datetime(2031, 1, 1, tzinfo=UTC)
            lake.upsert(
                coerce_bars(fix, timeframe=tf, provider="perf", job_id="c", ingested_at=later)
            )
            mine = fix.filter(pl.col("symbol") == FIRST).select("ts", *cols)
            lib.update(FIRST, mine.to_pandas().set_index("ts"))
        lake.close()
    return out


def build_wide(root: Path, symbols: int, years: int, daily_format: str = "arrow") -> None:
    """Write the `qv serve`-style store: `symbols` x `years` of daily bars, both engines."""
    import arcticdb as adb

    from quantivista.model.schema import coerce_bars
    from quantivista.storage.lake.bars import ParquetLake

    frame = _daily(symbols, years)
    at = datetime(2029, 1, 1, tzinfo=UTC)
    from quantivista.config import StorageSettings

    lake = ParquetLake(root / "wide" / "lake", StorageSettings(daily_format=daily_format))
    lake.upsert(coerce_bars(frame, timeframe="1d", provider="perf", job_id="b", ingested_at=at))
    lake.close()
    lib = adb.Arctic(f"lmdb://{root / 'wide' / 'arctic'}").get_library(
        "bars", create_if_missing=True
    )
    cols = ["open", "high", "low", "close", "volume"]
    lib.write_batch(
        [
            adb.WritePayload(str(sym), part.select("ts", *cols).to_pandas().set_index("ts"))
            for (sym,), part in frame.group_by("symbol", maintain_order=True)
        ]
    )


def parallel_reads(root: Path, engine: str, processes: int, universe: int) -> dict[str, Any]:
    """Run `processes` fresh processes at once, each reading READS random symbols."""
    cmds = [
        [sys.executable, __file__, "--child", engine, "--root", str(root),
         "--mode", f"random-{seed}-{universe}"]
        for seed in range(processes)
    ]  # fmt: skip
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in cmds]
    times: list[float] = []
    for proc in procs:
        out, _ = proc.communicate()
        assert proc.returncode == 0
        times.extend(json.loads(out.strip().splitlines()[-1])["times"])
    ordered = sorted(times)
    return {
        "reads": len(times),
        "p50_ms": round(ordered[len(ordered) // 2], 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)], 2),
        "max_ms": round(ordered[-1], 2),
    }


def run_child(engine: str, root: Path, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", engine, "--root", str(root), "--mode", mode]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def summary(samples: list[dict[str, float]]) -> dict[str, float]:
    ms = [s["ms"] for s in samples]
    return {
        "median_ms": round(statistics.median(ms), 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
        "cpu_median_ms": round(statistics.median(s["cpu_ms"] for s in samples), 2),
    }


def main() -> None:
    """Build the stores, run the fresh processes, print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--row-group-rows", type=int, help="storage.row_group_rows to write")
    parser.add_argument("--wide", type=int, default=2000, help="symbols of the parallel store")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--daily-format", choices=["arrow", "parquet"], default="arrow")
    parser.add_argument("--intraday-format", choices=["arrow", "parquet"])
    parser.add_argument("--intraday-compression", choices=["none", "lz4", "zstd"])
    parser.add_argument("--child", choices=["lake", "arcticdb"])
    parser.add_argument("--root")
    parser.add_argument("--mode", default="daily")
    args = parser.parse_args()
    if args.child:
        child = child_lake if args.child == "lake" else child_arctic
        print(json.dumps(child(args.root, args.mode)))
        return
    out: dict[str, Any] = {"bench": "cold_read", "runs": args.runs, "symbols": args.symbols}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out["daily_format"] = args.daily_format
        intraday = {
            key: value
            for key, value in (
                ("intraday_format", args.intraday_format),
                ("intraday_arrow_compression", args.intraday_compression),
            )
            if value is not None
        }
        out.update(intraday)
        out.update(
            build(root, args.symbols, args.years, args.row_group_rows, args.daily_format, intraday)
        )
        got: dict[str, dict[str, list[dict[str, float]]]] = {"lake": {}, "arcticdb": {}}
        rows: dict[str, set[int]] = {}
        for _ in range(args.runs):
            for engine in ("lake", "arcticdb"):
                for mode in ("daily", "as_of", "minute"):
                    res = run_child(engine, root, mode)
                    rows.setdefault(f"{engine}_{mode}", set()).add(int(res.pop("rows")))
                    for key, value in res.items():
                        got[engine].setdefault(key, []).append(value)
        build_wide(root, args.wide, args.years, args.daily_format)
        for engine in ("lake", "arcticdb"):
            found = parallel_reads(root, engine, args.processes, args.wide)
            out[f"{engine}_parallel_random"] = found
    for engine, figures in got.items():
        for key, samples in figures.items():
            out[f"{engine}_{key}"] = summary(samples)
    for key in ("first", "next", "as_of", "minute"):
        lake, adb = out[f"lake_{key}"]["median_ms"], out[f"arcticdb_{key}"]["median_ms"]
        out[f"{key}_lake_over_arcticdb"] = round(lake / adb, 2)
    out["as_of_over_first"] = round(
        out["lake_as_of"]["median_ms"] / out["lake_first"]["median_ms"], 2
    )
    out["rows"] = {k: sorted(v) for k, v in rows.items()}
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
