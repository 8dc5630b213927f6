"""Budgets for the few asserts whose target is speed: scaled by how contended the CPU is now.

Functional asserts stay strict; only a latency or throughput target (a benchmark the lead
re-measures on a quiet machine) may take more time on a machine shared by many processes.
"""

from __future__ import annotations

import os
import time


def cpu_slowdown(sample_s: float = 0.2) -> float:
    """Return how many times slower than alone this thread runs now (1.0 on an idle machine).

    A busy loop's wall time over the CPU time the scheduler gave it: at load 20 on 2 cores it
    is about 10, whatever the load average (which lags by a minute) says.
    """
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    while time.perf_counter() - wall0 < sample_s:
        pass
    cpu = max(time.thread_time() - cpu0, 1e-3)
    return max(1.0, (time.perf_counter() - wall0) / cpu)


def contention() -> float:
    """Return the larger of the slowdown now and the 1-minute load per core (at least 1.0).

    The sample catches a burst the load average has not seen yet; the load average covers a
    lull in a busy minute. Call it before and after the timed work and keep the larger.
    """
    per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    return max(1.0, cpu_slowdown(), per_core)
