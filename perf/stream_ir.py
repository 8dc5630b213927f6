"""Instructions along a stream release's path (callgrind: load-independent, unlike times).

One process under `valgrind --tool=callgrind` runs `qv stream`'s service in-process (lake,
in-memory broker, a fixed clock): 50 symbols welcomed as `qv stream` does, then minutes of
20,000 trades each (what `perf/stream.py` sends at 60x event time), in micro-batches of
2,000 trades. The micro-batch that closes a minute folds its trades and stores and
publishes the released bars (`StreamService.process`: fold, validate, store, publish, the
bookkeeping); it sits between two `os.getppid()` calls (dump boundaries under
`--dump-before=getppid`), so its instructions, every thread's (Polars' pool too), are one
dump's total. Prints one JSON line: `first` (the first release), `warm_median` and
`warm_max` over the next `RELEASES`, and `fold_median` (a micro-batch that releases
nothing: the fold alone). The broker's share here is the in-memory broker's; NATS round
trips are not in it. Usage: python perf/stream_ir.py  (needs valgrind; a few minutes)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from _common import callgrind_totals

SYMBOLS = [f"S{i:03d}" for i in range(50)]
RELEASES = 8  # warm releases measured after the first
PER_MINUTE = 20_000
BATCHES = 10  # micro-batches a minute
T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)


def child(root: Path) -> None:
    """Feed minutes of trades; mark the first micro-batch of each minute (it releases the
    minute before) and the second (a fold alone)."""
    import numpy as np
    import polars as pl

    from quantivista.clock import TestClock
    from quantivista.config import Settings, StorageSettings
    from quantivista.processing.trade_bars import TRADE_SCHEMA
    from quantivista.runtime import Runtime

    settings = Settings(
        data_dir=root,
        storage=StorageSettings(write_threads=1),
        bus={"url": "memory://", "codec": "avro"},
        stream={"lateness_s": 1.0, "idle_s": 3600.0},
    )
    rng = np.random.default_rng(3)
    names = np.array(SYMBOLS)
    prices = rng.uniform(20, 500, len(SYMBOLS))
    t0_us = int(T0.timestamp() * 1e6)
    per = PER_MINUTE // BATCHES
    with Runtime.from_settings(settings, clock=TestClock(T0)) as rt:
        service = rt.stream_service("synthetic")
        service.welcome(SYMBOLS, T0)
        for minute in range(RELEASES + 2):
            for k in range(BATCHES):
                which = rng.integers(0, len(SYMBOLS), per)
                lo = t0_us + minute * 60_000_000 + k * 6_000_000
                stamps = np.sort(rng.integers(lo, lo + 6_000_000, per))
                frame = pl.DataFrame(
                    {
                        "symbol": names[which],
                        "ts": pl.Series(stamps).cast(pl.Datetime("us", "UTC")),
                        "price": prices[which] * np.exp(rng.normal(0, 1e-4, per)),
                        "size": rng.integers(1, 500, per).astype(np.float64),
                        "provider": ["synthetic"] * per,
                    },
                    schema=TRADE_SCHEMA,
                )
                marked = minute > 0 and k < 2
                if marked:
                    os.getppid()  # a dump boundary under --dump-before=getppid
                released = service.process(frame)
                if marked:
                    os.getppid()
                    assert (k == 0) != released.empty, (minute, k)
        service.flush()
        service.close()
        assert service.stats.bars == 50 * (RELEASES + 2)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        totals = callgrind_totals([__file__, "--child", str(Path(tmp) / "data")])
    inside = totals[1::2]  # dumps alternate: before a marked call, the call
    releases, folds = inside[0::2], inside[1::2]
    warm = releases[1:]
    print(
        json.dumps(
            {
                "bench": "stream_ir",
                "first": releases[0],
                "warm_median": int(statistics.median(warm)),
                "warm_max": max(warm),
                "fold_median": int(statistics.median(folds)),
                "releases": len(releases),
            }
        )
    )


if __name__ == "__main__":
    main()
