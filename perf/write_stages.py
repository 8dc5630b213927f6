"""Stage times of one `Platform.write_bars` of the storage benchmark's universe.

Wraps each pipeline stage the runner calls (coerce, history read, validate, scores, upsert,
quarantine, catalog report, announce) with a timer, writes the universe of perf/storage.py
(500 symbols x 10 years of daily bars, about 1.26 M bars) into a fresh lake, and prints one
JSON line of seconds per stage. `--runs N` repeats with a fresh lake each time and reports
the median (and min/max) per stage. `cpu_median_s` is the process CPU time per stage (all
threads): on a shared machine it moves less than wall time. Usage:
python perf/write_stages.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quantivista.pipeline.runner as runner_module
from quantivista.platform import Platform
from storage import universe


def _timed(fn: Callable[..., Any], name: str, times: dict[str, float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            times[name] += time.perf_counter() - t0
            times[f"cpu:{name}"] += time.process_time() - c0

    return wrapper


def one_write(frame: Any, root: Path) -> dict[str, float]:
    """Write `frame` into a fresh lake at `root`; return seconds per stage."""
    times: dict[str, float] = defaultdict(float)
    # the runner calls the stages by these names; the stores are timed on the instances
    stages = {"coerce": "coerce", "history_for": "history", "validate": "validate",
              "announce": "announce"}  # fmt: skip
    saved = {name: getattr(runner_module, name) for name in stages}
    for name, label in stages.items():
        setattr(runner_module, name, _timed(saved[name], label, times))
    try:
        with Platform.open(root) as p:
            backend = p.runtime.backend
            backend.bars.upsert = _timed(backend.bars.upsert, "upsert", times)  # type: ignore[method-assign]
            backend.quarantine.add = _timed(backend.quarantine.add, "quarantine", times)  # type: ignore[method-assign]
            backend.catalog.save_report = _timed(backend.catalog.save_report, "report", times)  # type: ignore[method-assign]
            backend.scores.add = _timed(backend.scores.add, "scores_add", times)  # type: ignore[method-assign]
            p.calendar()  # loaded before the clock starts, as in a running service
            t0, c0 = time.perf_counter(), time.process_time()
            report = p.write_bars(frame, source="perf", timeframe="1d")
            times["total"] = time.perf_counter() - t0
            times["cpu:total"] = time.process_time() - c0
            assert report.invalid_records == 0, report
    finally:
        for name, fn in saved.items():
            setattr(runner_module, name, fn)
    # stages are disjoint (history runs before validate starts), except the scores, which a
    # big batch stores on a thread while the bars are written: the rest is the writer's own
    timed = [k for k in times if ":" not in k and k not in ("total", "scores_add")]
    for prefix in ("", "cpu:"):
        times[f"{prefix}other"] = times[f"{prefix}total"] - sum(times[prefix + k] for k in timed)
    return dict(times)


def main() -> None:
    """Run the stage benchmark and print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    frame = universe(args.symbols, args.years)
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_write(frame, Path(tmp) / "lake"))
    names = sorted({k for r in runs for k in r if ":" not in k}, key=lambda k: (k == "total", k))
    out: dict[str, Any] = {"bench": "write_stages", "bars": frame.height, "runs": args.runs}

    def stat(fn: Callable[[list[float]], float], prefix: str = "") -> dict[str, float]:
        return {k: round(fn([r.get(prefix + k, 0.0) for r in runs]), 4) for k in names}

    out["median_s"] = stat(statistics.median)
    out["min_s"] = stat(min)
    out["max_s"] = stat(max)
    out["cpu_median_s"] = stat(statistics.median, "cpu:")
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
