"""What the benchmarks share: the load average, wall and CPU timing, one rounded JSON line.

A script imports it as `from _common import ...` (perf/ is on the path of a script run as
`python perf/NAME.py`). `make perf` skips files starting with `_`: this one measures nothing.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "callgrind_totals",
    "load_avg_1m",
    "median_seconds",
    "print_json_line",
    "rounded",
    "wall_and_cpu",
]


def load_avg_1m() -> float:
    """Return the 1-minute load average, to print beside every figure."""
    return round(os.getloadavg()[0], 2)


def wall_and_cpu(
    fn: Callable[[], Any], repeat: int, *, warmup: int = 0
) -> tuple[list[float], list[float]]:
    """Return the wall and CPU (this process) seconds of `repeat` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus


def median_seconds(
    fn: Callable[[], Any],
    runs: int,
    *,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Return the median seconds of `runs` calls of `fn` after `warmup` calls, by `clock`
    (wall time; `time.thread_time` for this thread's CPU, which a loaded machine does not
    inflate)."""
    for _ in range(warmup):
        fn()
    spent = []
    for _ in range(runs):
        t0 = clock()
        fn()
        spent.append(clock() - t0)
    return statistics.median(spent)


def rounded(value: Any, digits: int) -> Any:
    """Return `value` with every float in it (nested dicts and lists too) rounded."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def print_json_line(out: dict[str, Any], digits: int | None = None) -> None:
    """Print the result as one JSON line (floats rounded to `digits` when given)."""
    print(json.dumps(out if digits is None else rounded(out, digits)))


def callgrind_totals(child: list[str]) -> list[int]:
    """Run `python child...` under callgrind, dumping before each `os.getppid()` the child
    calls as a marker; return the instruction total of each dump, in order."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--dump-before=getppid",
            f"--callgrind-out-file={out}",
            sys.executable,
            *child,
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        dumps = sorted(Path(tmp).glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
        totals = []
        for dump in dumps:
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith("totals:"):
                    totals.append(int(line.split()[1]))
                    break
    return totals
