"""Adjusting 10 years x 500 symbols of daily bars on read vs the unadjusted read.

Prints one JSON line: seconds for the raw read, the cold adjusted read (factors computed),
the warm adjusted read (cached view) and the ratios. Target: cold adjusted <= 2x raw.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import date

import numpy as np
import polars as pl

from quantivista import Platform

SYMBOLS = 500
YEARS = 10


def _universe(p: Platform) -> list[str]:
    sessions = p.calendar("XNYS").sessions(date(2014, 1, 2), date(2023, 12, 29))
    n = sessions.len()
    rng = np.random.default_rng(1)
    names = [f"S{i:03d}" for i in range(SYMBOLS)]
    close = np.exp(rng.normal(0, 0.02, (SYMBOLS, n)).cumsum(axis=1)) * 50
    bars = pl.DataFrame(
        {
            "symbol": np.repeat(names, n),
            "ts": pl.Series(np.tile(sessions.to_numpy(), SYMBOLS)).cast(pl.Datetime("us", "UTC")),
            "open": close.ravel(),
            "high": close.ravel() * 1.01,
            "low": close.ravel() * 0.99,
            "close": close.ravel(),
            "volume": rng.uniform(1e5, 1e6, SYMBOLS * n),
        }
    )
    p.write_bars(bars, source="perf", timeframe="1d")
    # quarterly dividends for every symbol, one split each
    quarters = sessions.gather_every(63)
    divs = pl.DataFrame(
        {
            "symbol": np.repeat(names, quarters.len()),
            "ex_date": np.tile(quarters.to_numpy(), SYMBOLS),
            "action_type": "dividend",
            "amount": 0.2,
        }
    )
    splits = pl.DataFrame(
        {
            "symbol": names,
            "ex_date": [sessions[int(i)] for i in rng.integers(1, n - 1, SYMBOLS)],
            "action_type": "split",
            "ratio": 2.0,
        }
    )
    p.write_actions(pl.concat([divs, splits], how="diagonal"))
    return names


def _best(fn: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    """Build the universe in a temporary lake, time the reads, print JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        p = Platform.open(tmp)
        names = _universe(p)
        p.close()
        # from the files, as a fresh process reads them: no partition cache on either side
        p = Platform.open(tmp, storage={"cache_mb": 0})
        raw = _best(lambda: p.bars(names))
        cold = _best(lambda: (p.runtime.queries.reader.invalidate(), p.bars(names, adjust="all")))
        warm = _best(lambda: p.bars(names, adjust="all"))
        rows = p.bars(names, adjust="all").height
        p.close()
        # with the lake's hot-partition cache: only the adjustment itself is left to pay for
        p = Platform.open(tmp)
        raw_cached = _best(lambda: p.bars(names))
        cold_cached = _best(
            lambda: (p.runtime.queries.reader.invalidate(), p.bars(names, adjust="all"))
        )
        p.close()
    print(
        json.dumps(
            {
                "benchmark": "adjust_on_read",
                "symbols": SYMBOLS,
                "years": YEARS,
                "rows": rows,
                "raw_read_s": round(raw, 4),
                "adjusted_cold_s": round(cold, 4),
                "adjusted_warm_s": round(warm, 6),
                "cold_ratio": round(cold / raw, 3),
                "raw_read_partition_cache_s": round(raw_cached, 4),
                "adjusted_partition_cache_s": round(cold_cached, 4),
                "warm_ratio": round(warm / raw, 5),
                "target_ratio": 2.0,
            }
        )
    )


if __name__ == "__main__":
    main()
