"""How fast this machine is right now, on a fixed workload (not a benchmark of our code).

The same code's CPU time per stream release doubled within one session on a quiet machine
(load ~0.9, no steal): thread CPU time alone does not tell a slower machine from slower
code. This runs fixed workloads and prints the process's user and system CPU time apart
(`getrusage`): a slower CPU or a busier neighbour stretches user time;
memory the kernel must reclaim or compact at page faults shows as system time. Run it
beside a benchmark (before and after) and compare with a run where the figures were good.

- `python_ms`: a pure-Python loop (the interpreter; no allocation to speak of);
- `polars_ms`: sorts, a group-by and a join over fresh 2 M-row frames (allocates ~0.5 GB);
- `alloc_ms`: numpy arrays of 64 MB allocated, touched and freed (page faults);
each the median of `ROUNDS`, with `*_sys_ms` the system share; plus the 1-minute load, the
kernel's transparent huge page modes and its free memory in 2 MB+ blocks (`/proc/buddyinfo`).
Usage: python perf/machine_probe.py
"""

from __future__ import annotations

import resource
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from _common import load_avg_1m, print_json_line

ROUNDS = 5
ROWS = 2_000_000


def _cpu_times() -> tuple[float, float]:
    # the process's (Polars works on its own thread pool); nothing else runs meanwhile
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _measure(fn: Callable[[], object]) -> tuple[float, float]:
    """Median user+system and system milliseconds of `ROUNDS` calls after one warm-up."""
    fn()
    total, system = [], []
    for _ in range(ROUNDS):
        u0, s0 = _cpu_times()
        fn()
        u1, s1 = _cpu_times()
        total.append((u1 - u0 + s1 - s0) * 1000)
        system.append((s1 - s0) * 1000)
    return statistics.median(total), statistics.median(system)


def _python() -> int:
    acc = 0
    for i in range(3_000_000):
        acc += i & 7
    return acc


def _polars() -> int:
    rng = np.random.default_rng(1)
    frame = pl.DataFrame(
        {
            "k": rng.integers(0, 5_000, ROWS),
            "t": rng.integers(0, 1 << 40, ROWS),
            "x": rng.random(ROWS),
        }
    )
    ordered = frame.sort("k", "t")
    grouped = ordered.group_by("k").agg(pl.col("x").sum(), pl.col("t").max())
    return ordered.join(grouped, on="k").height


def _alloc() -> float:
    acc = 0.0
    for _ in range(8):
        block = np.ones(8 << 20)  # 64 MB, every page touched
        acc += float(block[-1])
        del block
    return acc


def _huge_page_modes() -> dict[str, str]:
    out = {}
    for name in ("enabled", "defrag"):
        path = Path("/sys/kernel/mm/transparent_hugepage") / name
        text = path.read_text() if path.exists() else ""
        chosen = [w[1:-1] for w in text.split() if w.startswith("[")]
        out[f"thp_{name}"] = chosen[0] if chosen else "unknown"
    return out


def _free_2mb_blocks() -> int:
    """Free blocks of 2 MB or more (buddy orders >= 9 on 4 KB pages), all zones."""
    path = Path("/proc/buddyinfo")
    if not path.exists():
        return -1
    blocks = 0
    for line in path.read_text().splitlines():
        counts = [int(c) for c in line.split()[4:]]
        blocks += sum(c << (order - 9) for order, c in enumerate(counts) if order >= 9)
    return blocks


def main() -> None:
    out: dict[str, object] = {"bench": "machine_probe", "load_avg_1m": load_avg_1m()}
    for name, fn in (("python", _python), ("polars", _polars), ("alloc", _alloc)):
        total, system = _measure(fn)
        out[f"{name}_ms"] = total
        out[f"{name}_sys_ms"] = system
    out.update(_huge_page_modes())
    out["free_2mb_blocks"] = _free_2mb_blocks()
    out["load_avg_1m_end"] = load_avg_1m()
    print_json_line(out, 2)


if __name__ == "__main__":
    main()
