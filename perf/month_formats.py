"""Month files of 1-minute bars: disk size and cold read of one symbol-month per format.

One month (2024-01, XNYS sessions) of 1-minute bars of `--symbols` (500) symbols with
extended hours (04:00-20:00 New York: every regular minute, a share of the others by the
symbol's liquidity), prices in cents, written by `ParquetLake.upsert` into one lake per
month-file format (`storage.intraday_format`, `storage.intraday_arrow_compression`):
parquet (zstd, today's files), arrow (uncompressed), arrow-lz4, arrow-zstd; and into
ArcticDB (LMDB, one frame per symbol). Then `--runs` rounds of fresh processes (the
variants and ArcticDB alternating), each opening its store and reading `S0000`'s month
(cold), then again (warm, the lake's partition cache); and one as-of read per variant
(before a correction of 30 minutes of `S0000`'s bucket, history beside the base), and one
`recent()` per variant (the validation's warm-up read in a fresh writer: every symbol's
last hour, from the bases' tails; lake only).
With `--ir`, the lake's reads under callgrind too (instructions, load-independent).
Prints one JSON line: bytes on disk, write seconds, medians (wall, process CPU), load.
Usage: python perf/month_formats.py [--symbols 500] [--runs 5] [--ir]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import callgrind_totals
from cold_read import _clock, _since  # one wall + CPU stopwatch for the read benchmarks

SYMBOL = "S0000"
VARIANTS = {  # name: (intraday_format, intraday_arrow_compression)
    "parquet": ("parquet", "none"),
    "arrow": ("arrow", "none"),
    "arrow_lz4": ("arrow", "lz4"),
    "arrow_zstd": ("arrow", "zstd"),
}
AS_OF = datetime(2030, 1, 1, tzinfo=UTC)  # the correction is stamped later than this


def universe(symbols: int) -> Any:
    """Return one month of extended-hours 1-minute bars of `symbols` symbols."""
    import numpy as np
    import polars as pl

    from quantivista.reference.calendars import get_calendar

    sessions = get_calendar("XNYS").sessions(date(2024, 1, 1), date(2024, 1, 31)).to_list()
    # 04:00-20:00 New York (EST: UTC-5); regular hours 14:30-21:00 UTC
    minutes = [
        datetime(d.year, d.month, d.day, 9, tzinfo=UTC) + timedelta(minutes=m)
        for d in sessions
        for m in range(960)
    ]
    stamps = np.array([int(m.timestamp() * 1e6) for m in minutes])
    regular = np.array([330 <= (i % 960) < 720 for i in range(len(minutes))])
    rng = np.random.default_rng(3)
    frames = []
    for i in range(symbols):
        keep = regular | (rng.random(len(minutes)) < rng.uniform(0.05, 0.9))
        ts = stamps[keep]
        n = len(ts)
        price = rng.uniform(5, 500)
        close = np.round(price * np.exp(rng.normal(0, 0.0008, n).cumsum()), 2)
        open_ = np.round(close * (1 + rng.normal(0, 0.0004, n)), 2)
        high = np.maximum(open_, close) + np.round(rng.exponential(0.02, n), 2)
        low = np.minimum(open_, close) - np.round(rng.exponential(0.02, n), 2)
        volume = np.round(rng.lognormal(6, 1.5, n)).astype(np.float64)
        frames.append(
            pl.DataFrame(
                {
                    "symbol": [f"S{i:04d}"] * n,
                    "ts": pl.Series(ts).cast(pl.Datetime("us", "UTC")),
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": volume,
                    "vwap": np.round((high + low + close) / 3, 4),
                    "trades": np.maximum(volume // 50, 1).astype(np.int64),
                }
            )
        )
    return pl.concat(frames)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(root: Path, symbols: int) -> dict[str, Any]:
    """Write the month into every variant's lake and into ArcticDB; return sizes, times."""
    import arcticdb as adb
    import polars as pl

    from quantivista.config import StorageSettings
    from quantivista.model.schema import coerce_bars
    from quantivista.storage.lake.bars import ParquetLake

    frame = universe(symbols)
    at = datetime(2029, 1, 1, tzinfo=UTC)
    bars = coerce_bars(frame, timeframe="1m", provider="perf", job_id="b", ingested_at=at)
    bucket = None
    out: dict[str, Any] = {"bars": frame.height, "arcticdb_version": adb.__version__}
    for name, (fmt, codec) in VARIANTS.items():
        settings = StorageSettings(intraday_format=fmt, intraday_arrow_compression=codec)  # type: ignore[arg-type]
        lake = ParquetLake(root / name, settings)
        t = _clock()
        lake.upsert(bars)
        out[f"{name}_write"] = _since(t)
        out[f"{name}_bytes"] = _size(root / name / "silver" / "bars")
        if bucket is None:  # a correction of 30 minutes of SYMBOL's bucket: as-of history
            mates = [s for s in frame["symbol"].unique() if lake.bucket(s) == lake.bucket(SYMBOL)]
            fix = frame.filter(pl.col("symbol").is_in(mates)).group_by("symbol").head(30)
            bucket = fix.with_columns(close=pl.col("close") + 0.5)
        later = datetime(2031, 1, 1, tzinfo=UTC)
        lake.upsert(coerce_bars(bucket, timeframe="1m", provider="perf", job_id="c",
                                ingested_at=later))  # fmt: skip
        lake.close()
    lib = adb.Arctic(f"lmdb://{root / 'arctic'}").get_library("bars", create_if_missing=True)
    cols = ["open", "high", "low", "close", "volume", "vwap", "trades"]
    payloads = [
        adb.WritePayload(str(sym), part.select("ts", *cols).to_pandas().set_index("ts"))
        for (sym,), part in frame.group_by("symbol", maintain_order=True)
    ]
    t = _clock()
    lib.write_batch(payloads)
    out["arcticdb_write"] = _since(t)
    out["arcticdb_bytes"] = _size(root / "arctic")
    return out


def child(root: Path, engine: str, mode: str, markers: bool = False) -> dict[str, Any]:
    """Open a store in this fresh process and read SYMBOL's month (cold, then warm)."""

    def mark() -> None:
        if markers:
            os.getppid()  # a dump boundary under callgrind's --dump-before=getppid

    if engine == "arcticdb":
        import arcticdb as adb

        mark()
        t = _clock()
        lib = adb.Arctic(f"lmdb://{root / 'arctic'}").get_library("bars")
        cold = len(lib.read(SYMBOL, as_of=0 if mode == "as_of" else None).data)
        out: dict[str, Any] = {"cold": _since(t), "rows": cold}
        mark()
        t = _clock()
        assert len(lib.read(SYMBOL).data)
        out["warm"] = _since(t)
        mark()
        return out
    from quantivista.model.timeframe import Timeframe
    from quantivista.storage.lake.bars import ParquetLake

    m1 = Timeframe.parse("1m")
    if mode == "recent":
        lake = ParquetLake(root / engine)
        names = [f"S{i:04d}" for i in range(int(os.environ["QV_PERF_SYMBOLS"]))]
        end = datetime(2024, 2, 1, 1, tzinfo=UTC)
        mark()
        t = _clock()
        got = lake.recent(names, m1, end - timedelta(hours=1), end)
        out = {"cold": _since(t), "rows": got.height}
        mark()
        t = _clock()
        assert lake.recent(names, m1, end - timedelta(hours=1), end).height
        out["warm"] = _since(t)
        mark()
        return out
    mark()
    t = _clock()
    lake = ParquetLake(root / engine)
    got = lake.read([SYMBOL], m1, as_of=AS_OF if mode == "as_of" else None)
    out = {"cold": _since(t), "rows": got.height}
    mark()
    t = _clock()
    assert lake.read([SYMBOL], m1).height
    out["warm"] = _since(t)
    mark()
    return out


def _run(root: Path, engine: str, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", engine, "--root", str(root), "--mode", mode]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _median(samples: list[dict[str, float]]) -> dict[str, float]:
    return {
        "ms": round(statistics.median(s["ms"] for s in samples), 2),
        "cpu_ms": round(statistics.median(s["cpu_ms"] for s in samples), 2),
    }


def main() -> None:
    """Build the stores, run the fresh processes, print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ir", action="store_true", help="also callgrind instruction counts")
    parser.add_argument("--child")
    parser.add_argument("--root")
    parser.add_argument("--mode", default="read")
    parser.add_argument("--markers", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.root), args.child, args.mode, args.markers)))
        return
    engines = [*VARIANTS, "arcticdb"]
    out: dict[str, Any] = {"bench": "month_formats", "symbols": args.symbols, "runs": args.runs}
    os.environ["QV_PERF_SYMBOLS"] = str(args.symbols)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out.update(build(root, args.symbols))
        got: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.runs):
            for engine in engines:
                for mode in ("read", "as_of", "recent")[: 2 if engine == "arcticdb" else 3]:
                    got.setdefault(f"{engine}_{mode}", []).append(_run(root, engine, mode))
        for key, samples in got.items():
            out[f"{key}_rows"] = sorted({s["rows"] for s in samples})
            out[f"{key}_cold"] = _median([s["cold"] for s in samples])
            if not key.endswith("_as_of"):
                out[f"{key}_warm"] = _median([s["warm"] for s in samples])
        if args.ir:  # the lake's variants (ArcticDB's process does not run under valgrind)
            for engine in VARIANTS:
                for mode in ("read", "as_of"):
                    child_args = [__file__, "--child", engine, "--root", str(root)]
                    totals = callgrind_totals([*child_args, "--mode", mode, "--markers"])
                    out[f"{engine}_{mode}_ir"] = {"cold": totals[1], "warm": totals[2]}
    adb = out["arcticdb_read_cold"]["ms"]
    for name in VARIANTS:
        out[f"{name}_over_arcticdb"] = round(out[f"{name}_read_cold"]["ms"] / adb, 2)
        out[f"{name}_bytes_over_parquet"] = round(out[f"{name}_bytes"] / out["parquet_bytes"], 2)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
