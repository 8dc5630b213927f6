"""Where the slow streaming micro-batches spend their time (perf/append.py's stream).

Runs the stream of perf/append.py (500 symbols, one session of 1-minute bars stored, then
`--batches` micro-batches of one bar per symbol through `Platform.write_bars`) with timers
around the steps of a write on the writing thread (wall and thread CPU, inclusive: a step
holds the steps it calls), the garbage collections (`gc.callbacks`: generation, thread,
duration) and the background jobs' spans (merges and folds of deltas, score compactions).
Prints one JSON line: the batches' p50/p95/max and CPU, each step's mean and its mean over
the slowest 5% of batches, and the `--show` slowest batches with their steps, the
collections inside them and the background work overlapping them. A diagnosis tool, not a
benchmark: the timers add a little to every step. The set-up's heap is frozen as a service's
is (`--no-freeze`: not); `--switch-us` sets the interpreter's switch interval and
`--fold-rows` the lake's fold threshold, for A/B runs. Usage:
python perf/append_tail.py [--batches 300] [--recent] [--show 8] [--no-freeze]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quantivista.pipeline.runner as runner_module
import quantivista.pipeline.stages as stages_module
import quantivista.storage.lake.bars_core as bars_core
import quantivista.storage.lake.bars_deltas as bars_deltas
import quantivista.storage.lake.bars_replace as bars_replace
import quantivista.storage.lake.bars_writes as bars_writes
from _common import load_avg_1m, print_json_line
from append import minute_bars
from quantivista.config import IngestSettings
from quantivista.pipeline.recent import RecentHistory
from quantivista.platform import Platform
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.locks import StripeLocks
from quantivista.storage.lake.scores import ParquetScoreStore

_MAIN = threading.get_ident()
# the background jobs whose spans are compared with the batches'
_JOBS = ("ParquetLake.tidy", "ParquetScoreStore.compact")


class Recorder:
    """Per-batch step times of the writing thread, and the background spans."""

    def __init__(self) -> None:
        self.batch: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
        self.background: list[tuple[str, float, float, float]] = []  # name, t0, t1, cpu
        self.collections: list[tuple[int, bool, float, float]] = []  # gen, main, t0, seconds
        self._gc_start: dict[int, float] = {}

    def timed(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
                if threading.get_ident() == _MAIN:
                    step = self.batch[name]
                    step[0] += wall
                    step[1] += cpu
                    step[2] += 1
                else:
                    self.background.append((name, t0, t0 + wall, cpu))

        return wrapper

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        ident = threading.get_ident()
        if phase == "start":
            self._gc_start[ident] = time.perf_counter()
        elif ident in self._gc_start:
            t0 = self._gc_start.pop(ident)
            gen = info["generation"]
            self.collections.append((gen, ident == _MAIN, t0, time.perf_counter() - t0))


def patch(rec: Recorder) -> None:
    """Put timers around the steps of a write (module functions where they are looked up)."""
    for name in ("coerce", "validate", "store", "announce", "observe_stored", "history_for"):
        setattr(runner_module, name, rec.timed(getattr(runner_module, name), name))
    stages_module.mark_changed = rec.timed(stages_module.mark_changed, "mark_changed")
    for module in (bars_core, bars_deltas, bars_replace):  # the lake's modules that call it
        module.atomic_write_ipc = rec.timed(module.atomic_write_ipc, "write_delta_file")
    for name in ("latest_per_key", "_merge_few", "_merge", "ArrowBatch"):  # bars_writes names
        setattr(bars_writes, name, rec.timed(getattr(bars_writes, name), name))
    for name in ("_merged_rows", "_delta_parts", "_runs_index"):  # a merge's steps
        setattr(bars_deltas, name, rec.timed(getattr(bars_deltas, name), name))
    for cls, names in (
        (ParquetLake, ("upsert", "_live_deltas", "_known", "_write_delta", "_upsert_locked",
                       "recent", "tidy", "fold", "merge_deltas", "fold_timeframe", "_partition",
                       "_write_history", "_write_base", "_unchanged", "_fold_ahead",
                       "_swap_fold", "fold_locked", "_live", "_through", "_replace_latest",
                       "_holders", "_rewrite")),
        (ParquetScoreStore, ("add", "compact")),
        (RecentHistory, ("history", "add")),
    ):  # fmt: skip
        for name in names:
            label = f"{cls.__name__}.{name}"
            setattr(cls, name, rec.timed(getattr(cls, name), label))
    fg = bars_deltas.FOREGROUND
    fg.wait_idle = rec.timed(fg.wait_idle, "wait_idle")  # type: ignore[method-assign]
    held = StripeLocks.held

    @contextmanager
    def timed_held(self: StripeLocks, stripes: Any) -> Iterator[None]:
        t0 = time.perf_counter()
        with held(self, stripes):
            if threading.get_ident() == _MAIN:
                step = rec.batch["locks_wait"]
                step[0] += time.perf_counter() - t0
                step[2] += 1
            yield

    StripeLocks.held = timed_held  # type: ignore[method-assign]
    gc.callbacks.append(rec.on_gc)


def patch_platform(rec: Recorder, p: Platform) -> None:
    """Timers around the objects the runner holds (catalog, quarantine, actions, bus)."""
    runner = p.runtime.writes.runner
    sinks = runner.sinks
    for obj, name in (
        (sinks.catalog, "save_report"),
        (sinks.catalog, "put_state"),
        (sinks.quarantine, "add"),
        (runner.actions, "for_symbols"),
        (runner.bus, "publish"),
        (p.runtime.audit, "on_event"),
    ):
        label = f"{type(obj).__name__}.{name}"
        setattr(obj, name, rec.timed(getattr(obj, name), label))
    validator = runner.validator()
    validator.validate = rec.timed(validator.validate, "Validator.validate")  # type: ignore[method-assign]
    runner.validator = lambda: validator


def main() -> None:
    """Run the stream with timers and print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--recent", action="store_true")
    parser.add_argument("--show", type=int, default=8)
    parser.add_argument("--no-freeze", action="store_true", help="no gc.freeze() after set-up")
    parser.add_argument("--switch-us", type=int, default=0, help="sys.setswitchinterval")
    parser.add_argument("--fold-rows", type=int, default=0, help="the lake's _FOLD_ROWS")
    parser.add_argument("--interval-ms", type=float, default=0, help="pace the micro-batches")
    args = parser.parse_args()
    if args.fold_rows:
        bars_deltas._FOLD_ROWS = args.fold_rows
    if args.switch_us:
        sys.setswitchinterval(args.switch_us / 1e6)
    rec = Recorder()
    patch(rec)
    symbols = [f"S{i:04d}" for i in range(500)]
    open_ = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
    minute = timedelta(minutes=1)
    out: dict[str, Any] = {"bench": "append_tail", "load_avg_1m": load_avg_1m()}
    batches: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        recent = IngestSettings(keep_recent_history=args.recent)
        with Platform.open(Path(tmp) / "lake", ingest=recent) as p:
            session = [open_ + minute * k for k in range(390)]
            p.write_bars(minute_bars(symbols, session, 0), source="perf", timeframe="1m")
            patch_platform(rec, p)
            if not args.no_freeze:
                gc.freeze()  # as a service does after start-up (`run_daemon`, the API)
            start = time.perf_counter()
            for k in range(args.batches):
                batch = minute_bars(symbols, [open_ + minute * (390 + k)], k + 1)
                if args.interval_ms:  # paced as perf/append.py --interval-ms
                    time.sleep(max(0.0, start + k * args.interval_ms / 1e3 - time.perf_counter()))
                rec.batch.clear()
                gcs = len(rec.collections)
                t0, c0 = time.perf_counter(), time.thread_time()
                p.write_bars(batch, source="perf", timeframe="1m")
                wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
                steps = {
                    n: (round(w * 1e3, 2), round(c * 1e3, 2)) for n, (w, c, _) in rec.batch.items()
                }
                batches.append({"k": k, "t0": t0, "ms": wall * 1e3, "cpu_ms": cpu * 1e3,
                                "steps": steps, "gc": rec.collections[gcs:]})  # fmt: skip
    walls = sorted(b["ms"] for b in batches)
    cpus = sorted(b["cpu_ms"] for b in batches)
    n = len(walls)
    out.update(
        batches=n, recent=args.recent,
        p50_ms=statistics.median(walls), p95_ms=walls[int(0.95 * (n - 1))], max_ms=walls[-1],
        within_50ms=sum(w <= 50 for w in walls) / n,
        cpu_p50_ms=statistics.median(cpus), cpu_p95_ms=cpus[int(0.95 * (n - 1))],
    )  # fmt: skip
    slow = sorted(batches, key=lambda b: -b["ms"])
    tail = slow[: max(1, n // 20)]
    names = sorted({s for b in batches for s in b["steps"]})

    def mean(step: str, group: list[dict[str, Any]], i: int) -> float:
        return round(statistics.mean(b["steps"].get(step, (0, 0))[i] for b in group), 2)

    # each step: mean wall and CPU over every batch, then over the slowest 5%
    out["steps_mean_wall_cpu_ms"] = {
        s: [mean(s, batches, 0), mean(s, batches, 1), mean(s, tail, 0), mean(s, tail, 1)]
        for s in names
    }
    gens: dict[str, list[float]] = defaultdict(list)
    for gen, main_thread, _, seconds in rec.collections:
        gens[f"gen{gen}_{'main' if main_thread else 'bg'}"].append(seconds * 1e3)
    out["gc_ms"] = {g: [len(v), round(max(v), 2), round(sum(v), 1)] for g, v in gens.items()}
    bg: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, t0, t1, cpu in rec.background:
        bg[name].append(((t1 - t0) * 1e3, cpu * 1e3))
    out["background_cpu_total_ms"] = {
        k: round(sum(c for _, c in v), 1) for k, v in bg.items() if k in _JOBS
    }
    out["background_n_wall_cpu_max_ms"] = {
        k: [len(v), round(statistics.mean(w for w, _ in v), 1),
            round(statistics.mean(c for _, c in v), 1), round(max(w for w, _ in v), 1)]
        for k, v in bg.items()
    }  # fmt: skip
    spans = [(s, e) for name, s, e, _ in rec.background if name in _JOBS]
    apart: dict[bool, list[float]] = defaultdict(list)
    for b in batches:
        t0, t1 = b["t0"], b["t0"] + b["ms"] / 1e3
        apart[any(s < t1 and e > t0 for s, e in spans)].append(b["ms"] - b["cpu_ms"])
    out["wait_ms_beside_jobs"] = {
        "n": len(apart[True]),
        "mean": round(statistics.mean(apart[True] or [0]), 2),
    }
    out["wait_ms_alone"] = {
        "n": len(apart[False]),
        "mean": round(statistics.mean(apart[False] or [0]), 2),
    }
    # each job's batches (overlapping it, not the other): count, mean and max wait, max wall
    for job in _JOBS:
        mine = [(s, e) for name, s, e, _ in rec.background if name == job]
        other = [(s, e) for name, s, e, _ in rec.background if name in _JOBS and name != job]
        waits, walls_ = [], []
        for b in batches:
            t0, t1 = b["t0"], b["t0"] + b["ms"] / 1e3
            if any(s < t1 and e > t0 for s, e in mine) and not any(
                s < t1 and e > t0 for s, e in other
            ):
                waits.append(b["ms"] - b["cpu_ms"])
                walls_.append(b["ms"])
        out[f"wait_ms_beside_{job.split('.')[-1]}_only"] = (
            [len(waits), round(statistics.mean(waits), 2), round(max(waits), 1),
             round(max(walls_), 1)] if waits else [0]
        )  # fmt: skip
    shown = []
    for b in slow[: args.show]:
        t0, t1 = b["t0"], b["t0"] + b["ms"] / 1e3
        overlap: dict[str, float] = defaultdict(float)  # each background step's ms inside
        for name, s, e, _ in rec.background:
            if s < t1 and e > t0:
                overlap[name] += (min(e, t1) - max(s, t0)) * 1e3
        overlap = {k: round(v, 1) for k, v in sorted(overlap.items(), key=lambda kv: -kv[1])}
        top = sorted(b["steps"].items(), key=lambda kv: -kv[1][0])[:9]
        shown.append({"k": b["k"], "ms": round(b["ms"], 1), "cpu_ms": round(b["cpu_ms"], 1),
                      "gc": [(g, round(s * 1e3, 1)) for g, _, _, s in b["gc"]],
                      "bg": overlap, "steps": dict(top)})  # fmt: skip
    out["slowest"] = shown
    out["load_avg_1m_end"] = load_avg_1m()
    print_json_line(out, digits=2)


if __name__ == "__main__":
    main()
