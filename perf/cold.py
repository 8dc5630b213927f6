"""Cold-tier read benchmark: archived history read back through `ParquetLake.read`.

Workload: 20 symbols x 3 years (2021-2023) of 15-minute bars (26 a weekday, about 20,000 a
symbol) and of daily bars, plus 2024 H1 daily bars. `archive_expired` with hot_days
{15m: 30, 1d: 365} on 2024-06-30 moves all 15m bars and the daily bars before mid-2023 to a
`file://` archive. Then, in a fresh lake (empty cache):
- 15m first / second: read the 20 symbols' whole 15m history, twice
- 1d first / second: read the 20 symbols' whole daily history (both tiers), twice
- 1h (nothing archived, nothing stored): read the 20 symbols, the cost of asking
Each figure is the median of `--runs` fresh lakes (range in brackets); the archive's
`open` / listing calls of the second read are counted.
Prints one JSON line. Usage: python perf/cold.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quantivista.config import StorageSettings
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.retention import archive_expired

SYMBOLS = [f"S{i:03d}" for i in range(20)]


def bars(timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
    """Return random-walk bars of every symbol on weekdays between `start` and `end`."""
    if timeframe == "1d":
        ts = pl.datetime_range(start, end, "1d", eager=True, time_zone="UTC")
    else:
        days = pl.datetime_range(start, end, "1d", eager=True, time_zone="UTC")
        minutes = pl.DataFrame({"m": [14 * 60 + 30 + 15 * i for i in range(26)]})
        grid = pl.DataFrame({"d": days}).join(minutes, how="cross")
        ts = grid.select(pl.col("d") + pl.duration(minutes=pl.col("m"))).to_series()
    ts = ts.filter(ts.dt.weekday() <= 5).sort()
    n, k = len(ts), len(SYMBOLS)
    rng = np.random.default_rng(7)
    close = (100 * np.exp(rng.normal(0, 0.002, (k, n)).cumsum(axis=1))).ravel()
    raw = pl.DataFrame(
        {
            "symbol": np.repeat(SYMBOLS, n),
            "timeframe": timeframe,
            "ts": pl.concat([ts] * k),
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": rng.integers(100, 10_000, n * k).astype(np.float64),
        }
    )
    return coerce_bars(raw, provider="perf", job_id="perf", ingested_at=datetime.now(UTC))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def count_calls(fs: Any, names: tuple[str, ...]) -> dict[str, int]:
    """Wrap `names` on the filesystem instance and count their calls."""
    counts = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(fs, name)

        def wrapper(*a: Any, _name: str = name, _orig: Any = original, **kw: Any) -> Any:
            counts[_name] += 1
            return _orig(*a, **kw)

        setattr(fs, name, wrapper)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, cold = Path(tmp) / "lake", (Path(tmp) / "cold").as_uri()
        settings = StorageSettings(archive_url=cold)
        lake = ParquetLake(root, settings)
        lake.upsert(
            bars("15m", datetime(2021, 1, 1, tzinfo=UTC), datetime(2023, 12, 31, tzinfo=UTC))
        )
        lake.upsert(bars("1d", datetime(2021, 1, 1, tzinfo=UTC), datetime(2024, 6, 28, tzinfo=UTC)))
        archive_seconds, moved = timed(
            lambda: archive_expired(lake, {"15m": 30, "1d": 365}, datetime(2024, 6, 30, tzinfo=UTC))
        )
        results: dict[str, list[float]] = {}
        calls: dict[str, int] = {}
        rows: dict[str, int] = {}
        for _ in range(args.runs):
            fresh = ParquetLake(root, settings)
            for tf in ("15m", "1d", "1h"):
                timeframe = Timeframe.parse(tf)
                first, df = timed(lambda: fresh.read(SYMBOLS, timeframe))  # noqa: B023
                assert fresh.cold is not None
                counts = count_calls(fresh.cold.fs, ("open", "glob", "find", "exists", "info"))
                second, again = timed(lambda: fresh.read(SYMBOLS, timeframe))  # noqa: B023
                assert again.height == df.height
                results.setdefault(f"{tf}_first_s", []).append(first)
                results.setdefault(f"{tf}_second_s", []).append(second)
                calls[f"{tf}_second_archive_calls"] = sum(counts.values())
                rows[f"{tf}_rows"] = df.height
        summary = {
            k: f"{statistics.median(v):.4f} [{min(v):.4f}-{max(v):.4f}]" for k, v in results.items()
        }
        print(
            json.dumps(
                {"moved": moved, "archive_s": round(archive_seconds, 2), **rows, **summary, **calls}
            )
        )


if __name__ == "__main__":
    main()
