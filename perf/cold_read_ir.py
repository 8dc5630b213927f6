"""Instructions of a fresh process's cold reads (callgrind: load-independent, unlike times).

Builds the stores of `perf/cold_read.py` (or reuses `--root`), then runs fresh processes
under `valgrind --tool=callgrind`:
- daily: opens the lake and reads `S0000` (first), `S0001` (next, another bucket), `S0000`
  again (warm) and `S0002` (next2);
- as_of: opens the lake and reads `S0000` as of before its correction (history beside it);
- minute: opens the minute lake and reads `S0000` x 1 month of 1-minute bars.
Each read sits between two `os.getppid()` calls, which `--dump-before=getppid` turns into
dump boundaries, so every read's instructions (all threads) are one dump's total.
Usage: python perf/cold_read_ir.py [--root DIR] [--modes daily,as_of,minute]
       (needs valgrind; ~1 minute unloaded)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import callgrind_totals

READS = (("first", "S0000"), ("next", "S0001"), ("warm", "S0000"), ("next2", "S0002"))
AS_OF = datetime(2030, 1, 1, tzinfo=UTC)  # before `perf/cold_read.py`'s correction


def child(root: Path, mode: str) -> None:
    """Open the lake and read (each read of `mode`) between two dump markers."""
    from quantivista.model.timeframe import Timeframe
    from quantivista.storage.lake.bars import ParquetLake

    d1, lake = Timeframe.parse("1d"), None
    if mode in ("as_of", "minute"):
        os.getppid()
        if mode == "as_of":
            got = ParquetLake(root / "daily" / "lake").read(["S0000"], d1, as_of=AS_OF)
        else:
            got = ParquetLake(root / "minute" / "lake").read(["S0000"], Timeframe.parse("1m"))
        assert got.height
        os.getppid()
        return
    for _, symbol in READS:
        os.getppid()  # a dump boundary under --dump-before=getppid
        lake = lake or ParquetLake(root / "daily" / "lake")
        assert lake.read([symbol], d1).height
        os.getppid()


def measure(root: Path, modes: list[str]) -> dict[str, Any]:
    """Run a child per mode under callgrind; return each read's instruction count."""
    out: dict[str, Any] = {}
    for mode in modes:
        totals = callgrind_totals([__file__, "--child", str(root), "--mode", mode])
        inside = totals[1::2]  # dumps alternate: before a read, the read
        if mode == "daily":
            out.update({name: inside[i] for i, (name, _) in enumerate(READS)})
        else:
            out[mode] = inside[0]
    return out


def main() -> None:
    """Build (or reuse) the stores, measure, print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", help="a directory `perf/cold_read.py`'s build wrote")
    parser.add_argument("--modes", default="daily,as_of,minute")
    parser.add_argument("--child")
    parser.add_argument("--mode", default="daily")
    args = parser.parse_args()
    if args.child:
        child(Path(args.child), args.mode)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        if not args.root:
            sys.path.insert(0, str(Path(__file__).parent))
            import cold_read

            cold_read.build(root, 500, 10, None)
        found = measure(root, args.modes.split(","))
        print(json.dumps({"bench": "cold_read_ir", "instructions": found}))


if __name__ == "__main__":
    main()
