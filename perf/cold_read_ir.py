"""Instructions of a fresh process's cold reads (callgrind: load-independent, unlike times).

Builds the daily store of `perf/cold_read.py` (or reuses `--root`), then runs one fresh
process under `valgrind --tool=callgrind` that opens the lake and reads `S0000` (first),
`S0001` (next, another bucket), `S0000` again (warm) and `S0002` (next2). Each read sits
between two `os.getppid()` calls, which `--dump-before=getppid` turns into dump
boundaries, so every read's instructions (all threads) are one dump's total.
Usage: python perf/cold_read_ir.py [--root DIR]   (needs valgrind; ~1 minute unloaded)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import callgrind_totals

READS = (("first", "S0000"), ("next", "S0001"), ("warm", "S0000"), ("next2", "S0002"))


def child(root: Path) -> None:
    """Open the lake and read each of READS between two dump markers."""
    from quantivista.model.timeframe import Timeframe
    from quantivista.storage.lake.bars import ParquetLake

    d1, lake = Timeframe.parse("1d"), None
    for _, symbol in READS:
        os.getppid()  # a dump boundary under --dump-before=getppid
        lake = lake or ParquetLake(root / "daily" / "lake")
        assert lake.read([symbol], d1).height
        os.getppid()


def measure(root: Path) -> dict[str, Any]:
    """Run the child under callgrind; return each read's instruction count."""
    totals = callgrind_totals([__file__, "--child", str(root)])
    inside = totals[1::2]  # dumps alternate: before a read, the read
    return {name: inside[i] for i, (name, _) in enumerate(READS)}


def main() -> None:
    """Build (or reuse) the store, measure, print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", help="a directory `perf/cold_read.py`'s build wrote")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(Path(args.child))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        if not args.root:
            sys.path.insert(0, str(Path(__file__).parent))
            import cold_read

            cold_read.build(root, 500, 10, None)
        print(json.dumps({"bench": "cold_read_ir", "instructions": measure(root)}))


if __name__ == "__main__":
    main()
