"""Instructions per streaming micro-batch (callgrind: load-independent, unlike times).

The stream of perf/append.py (500 symbols, one session of 1-minute bars stored, then
`--batches` micro-batches of one bar per symbol through `Platform.write_bars`, the writer
keeping its recent history) in one process under `valgrind --tool=callgrind`, an
`os.getppid()` call before each batch (a dump boundary under `--dump-before=getppid`): each
dump is one batch's instructions, every thread's, so the background merges, folds and score
compactions count in the batches they ran beside (valgrind runs one thread at a time: where
a job lands is not where it lands in a real run, but the total is the stream's whole cost).
Prints one JSON line: the batches' median, p95, p99, max and total, and the largest five;
the first batch (it makes the session's delta folder) is left out. A/B: run it with each
tree on `PYTHONPATH`. Usage: python perf/append_ir.py [--batches 300]  (needs valgrind;
~3 minutes for 300)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import callgrind_totals


def child(root: Path, batches: int) -> None:
    """Store the session, then write the micro-batches, a marker before each."""
    from append import minute_bars
    from quantivista.config import IngestSettings
    from quantivista.platform import Platform

    symbols = [f"S{i:04d}" for i in range(500)]
    open_ = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
    minute = timedelta(minutes=1)
    with Platform.open(root, ingest=IngestSettings(keep_recent_history=True)) as p:
        session = [open_ + minute * k for k in range(390)]
        p.write_bars(minute_bars(symbols, session, 0), source="perf", timeframe="1m")
        gc.freeze()  # as a service does once started
        frames = [minute_bars(symbols, [open_ + minute * (390 + k)], k + 1) for k in range(batches)]
        for frame in frames:
            os.getppid()  # a dump boundary under --dump-before=getppid
            p.write_bars(frame, source="perf", timeframe="1m")
        os.getppid()


def main() -> None:
    """Run the child under callgrind and print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--child", default="")
    args = parser.parse_args()
    if args.child:
        child(Path(args.child), args.batches)
        return
    with tempfile.TemporaryDirectory() as tmp:
        child_args = [__file__, "--batches", str(args.batches), "--child", str(Path(tmp) / "lake")]
        totals = callgrind_totals(child_args)
    # dump 0: the set-up; dump k: batch k - 1 (the last batch ends at the final marker)
    per = sorted(totals[2 : args.batches + 1])
    n = len(per)
    print(
        json.dumps(
            {
                "bench": "append_ir",
                "batches": n,
                "median": int(statistics.median(per)),
                "p95": per[int(0.95 * (n - 1))],
                "p99": per[int(0.99 * (n - 1))],
                "max": per[-1],
                "total": sum(per),
                "largest": per[-5:],
            }
        )
    )


if __name__ == "__main__":
    main()
