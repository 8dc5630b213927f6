"""Validation throughput on daily bars sorted by symbol and time; prints one JSON line.

500 symbols x 10 years of XNYS sessions from a numpy generator (fat-tailed returns,
consistent OHLC, a sprinkle of damaged rows). Reports bars/s, best of `REPEAT` runs
(the machine is shared), for:
- row_local: the context-free rules as one select of flag bits (`Validator.flags`);
- row_local_validate: `validate()` with those rules only (dedupe check, split, report);
- full: `validate()` with every default rule on the calendar, incl. the rolling statistics;
- minute_full: the same on regular-session 1-minute bars (`QV_PERF_MINUTE_SYMBOLS` symbols
  x the full sessions of 2024-01..03, `quantivista.testing.minutes`), incl. the bad-print
  rule; minute_without_bad_print: the same without it (the rule's cost).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from _common import load_avg_1m, wall_and_cpu
from quantivista.model.schema import coerce_bars
from quantivista.quality.rules import DEFAULT_RULES, ROW_RULES
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import get_calendar
from quantivista.testing.minutes import session_minutes

SYMBOLS = int(os.environ.get("QV_PERF_SYMBOLS", "500"))
MINUTE_SYMBOLS = int(os.environ.get("QV_PERF_MINUTE_SYMBOLS", "100"))
REPEAT = 5


def make_bars(symbols: int, seed: int = 7) -> pl.DataFrame:
    """Daily bars for `symbols` instruments over 2014-2023, sorted by (symbol, ts)."""
    cal = get_calendar("XNYS")
    days = cal.sessions("2014-01-02", "2023-12-29")
    n_days = len(days)
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, size=(symbols, n_days)) * 0.012
    close = 50 * np.exp(np.cumsum(r, axis=1))
    prev = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    opn = prev * np.exp(rng.normal(0, 0.004, size=close.shape))
    span = np.abs(rng.normal(0, 0.008, size=close.shape))
    high = np.maximum(opn, close) * (1 + span)
    low = np.minimum(opn, close) * (1 - span)
    volume = rng.integers(1_000, 5_000_000, size=close.shape).astype(np.float64)
    flat = lambda a: a.ravel()  # noqa: E731
    ts = pl.Series(days).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    df = pl.DataFrame(
        {
            "symbol": np.repeat([f"S{i:04d}" for i in range(symbols)], n_days),
            "ts": pl.concat([ts] * symbols),
            "open": flat(opn),
            "high": flat(high),
            "low": flat(low),
            "close": flat(close),
            "volume": flat(volume),
        }
    )
    bad = rng.random(df.height) < 0.001
    df = df.with_columns(low=pl.when(pl.Series(bad)).then(pl.col("high") * 1.01).otherwise("low"))
    return coerce_bars(df, timeframe="1d", provider="perf")


def best(fn: Callable[[], Any]) -> tuple[float, float]:
    """Best wall time and best CPU time of `REPEAT` runs (after one warm-up).

    On a shared machine the wall time swings with other load; CPU seconds / 2 cores is
    what the same run would take with both cores to itself.
    """
    walls, cpus = wall_and_cpu(fn, REPEAT, warmup=1)
    return min(walls), min(cpus)


def main() -> None:
    bars = make_bars(SYMBOLS)
    cal = get_calendar("XNYS")
    row = Validator(None, ROW_RULES)
    full = Validator(cal)
    t_flags, c_flags = best(lambda: row.flags(bars))
    t_row, c_row = best(lambda: row.validate(bars, job_id="perf"))
    t_full, c_full = best(lambda: full.validate(bars, job_id="perf"))
    n = bars.height
    minutes = session_minutes(cal, "2024-01-02", "2024-03-28", MINUTE_SYMBOLS)
    m = minutes.height
    t_min, c_min = best(lambda: full.validate(minutes, job_id="perf"))
    plain = full.with_rules(tuple(r for r in DEFAULT_RULES if r.name != "bad_print"))
    t_plain, _ = best(lambda: plain.validate(minutes, job_id="perf"))
    cores = min(2, os.cpu_count() or 1)
    print(
        json.dumps(
            {
                "benchmark": "validate",
                "bars": n,
                "symbols": SYMBOLS,
                "threads": pl.thread_pool_size(),
                "row_local_bars_per_s": round(n / t_flags),
                "row_local_validate_bars_per_s": round(n / t_row),
                "full_bars_per_s": round(n / t_full),
                "full_seconds": round(t_full, 3),
                "minute_bars": m,
                "minute_full_bars_per_s": round(m / t_min),
                "minute_without_bad_print_bars_per_s": round(m / t_plain),
                "cpu_bound_bars_per_s": {
                    "row_local": round(n * cores / c_flags),
                    "row_local_validate": round(n * cores / c_row),
                    "full": round(n * cores / c_full),
                    "minute_full": round(m * cores / c_min),
                },
                "load_avg_1m": load_avg_1m(),
                "targets": {"row_local": 20_000_000, "full": 3_000_000, "minute_full": 3_000_000},
            }
        )
    )


if __name__ == "__main__":
    main()
