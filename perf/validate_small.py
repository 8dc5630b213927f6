"""Per-call cost of `validate()` on a streaming micro-batch (issues 14 and 20); one JSON line.

A micro-batch is one minute of 1m bars for `QV_PERF_SMALL_SYMBOLS` symbols (500 bars), or
40 symbols x 5 minutes (200 bars), each with the symbols' last hour of stored minutes as
history, as the stream passes it. The cost is fixed set-up per call, not per row, so the
numbers are per call: p50/p95 of wall and CPU ms over `QV_PERF_SMALL_REPEAT` calls in a
warm process. The peer is the floor of any validator: one polars select of the row rules'
flag bits (`Validator.flags`) on the same batch; `validate_whole_history` is the
validator without the history cut (the state before), measured in the same run.
`500x1_by_symbol` passes the same history grouped by symbol: history in ts order (as the
stream keeps it) is looked up from its end, any other order row by row. The
done-criterion (stream stores a micro-batch <= 50 ms) needs validate's share well under
it: target p50 CPU <= 4 ms.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import polars as pl

from _common import load_avg_1m, wall_and_cpu
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import get_calendar
from quantivista.testing.minutes import session_minutes

SYMBOLS = int(os.environ.get("QV_PERF_SMALL_SYMBOLS", "500"))
REPEAT = int(os.environ.get("QV_PERF_SMALL_REPEAT", "200"))
HISTORY_MINUTES = 60


def micro_batch(minutes: pl.DataFrame, per_symbol: int, symbols: int) -> tuple[Any, Any]:
    """The last `per_symbol` minutes of the first `symbols` symbols, and the hour before."""
    names = minutes["symbol"].unique(maintain_order=True).head(symbols)
    part = minutes.filter(pl.col("symbol").is_in(names.implode()))
    ts = part["ts"].unique().sort()
    cut = ts[-per_symbol]
    batch = part.filter(pl.col("ts") >= cut)
    history = part.filter(
        (pl.col("ts") < cut) & (pl.col("ts") >= ts[-per_symbol - HISTORY_MINUTES])
    )
    # the stream keeps its recent bars in arrival order: minute after minute
    return batch, history.sort("ts", maintain_order=True)


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    """p50/p95 wall and CPU milliseconds of `repeat` calls after 5 warm-up calls."""
    walls, cpus = wall_and_cpu(fn, repeat, warmup=5)
    w, c = np.array(walls) * 1e3, np.array(cpus) * 1e3
    return {
        "wall_p50_ms": round(float(np.percentile(w, 50)), 3),
        "wall_p95_ms": round(float(np.percentile(w, 95)), 3),
        "cpu_p50_ms": round(float(np.percentile(c, 50)), 3),
        "cpu_p95_ms": round(float(np.percentile(c, 95)), 3),
    }


def cases() -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    cal = get_calendar("XNYS")
    # the last full session of a week: the batch ends mid-afternoon, history is the hour before
    minutes = session_minutes(cal, "2024-03-04", "2024-03-04", SYMBOLS)
    minutes = minutes.filter(pl.col("ts") < pl.col("ts").max() - pl.duration(minutes=30))
    batch, history = micro_batch(minutes, 1, SYMBOLS)
    return {
        "500x1": (batch, history),
        "40x5": micro_batch(minutes, 5, 40),
        # the same hour kept per symbol (not in ts order): every stored bar is looked up
        "500x1_by_symbol": (batch, history.sort("symbol", "ts")),
    }


def one_call() -> None:
    """One validate of the 500-bar batch (for `valgrind --tool=callgrind` of a warm call)."""
    cal = get_calendar("XNYS")
    batch, history = cases()["500x1"]
    v = Validator(cal)
    v.validate(batch, job_id="perf", history=history)


class WholeHistory(Validator):
    """The validator before the history cut: every history row goes through the checks."""

    def _history_rows(self) -> int:
        return 10**9

    def _neighbour_rows(self) -> int:
        return 10**9


def measure(v: Validator, batch: pl.DataFrame, history: pl.DataFrame) -> dict[str, float]:
    return timed(lambda: v.validate(batch, job_id="perf", history=history), REPEAT)


def main() -> None:
    cal = get_calendar("XNYS")
    v, whole = Validator(cal), WholeHistory(cal)
    out: dict[str, Any] = {"benchmark": "validate_small", "repeat": REPEAT}
    for name, (batch, history) in cases().items():
        out[name] = {
            "bars": batch.height,
            "history_bars": history.height,
            "validate": measure(v, batch, history),
            "validate_whole_history": measure(whole, batch, history),
            "validate_no_history": measure(v, batch, history.clear()),
            "peer_flags_select": timed(partial(v.flags, batch), REPEAT),
        }
    out["threads"] = pl.thread_pool_size()
    out["load_avg_1m"] = load_avg_1m()
    out["target_cpu_p50_ms"] = 4.0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
