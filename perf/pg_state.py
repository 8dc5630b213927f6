"""The side stores on the lake and on PostgreSQL: scores, actions, task claims, quarantine, bronze.

Workloads (each measured `--runs` times on both backends; medians in seconds or per second):
- scores: one validated batch of 500 symbols x 10 years of daily scores (1.26 M rows):
  clean (one run per series), 1 % of days flagged at random, and every other day flagged
  (the worst case for runs: every day is a run of its own); `add`, then `read()` and
  `daily()` of everything
- actions: one upsert of 5,000 new actions, the same batch again (no-op), then 200 upserts
  of one changed action each (each a read-modify-write under the writer lock)
- claims: 1,000 tasks claimed and finished by 1 worker, then by 4 threads
- quarantine: `add` of 10,000 rejected rows, `list()` of them; bronze: `save` of 200
  payloads of 50 kB, `manifest()`
Needs the PostgreSQL server (QV_SERVICES__POSTGRES_DSN). Prints one JSON line.
Usage: python perf/pg_state.py [--symbols 500] [--years 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import polars as pl
import psycopg

from quantivista.config import Settings
from quantivista.model.jobs import IngestionJob, JobStatus, JobTask, TaskStatus
from quantivista.model.payloads import RawPayload
from quantivista.model.schema import ACTION_TYPES, QUARANTINE_POLARS_SCHEMA, SCORE_SCHEMA
from quantivista.storage.contracts import Backend
from quantivista.storage.lake.backend import open_lake
from quantivista.storage.postgres.backend import open_postgres

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def scores(symbols: int, years: int, pattern: str) -> pl.DataFrame:
    """Return one score per symbol-day; `pattern` says which days are flagged."""
    days = pl.date_range(date(2014, 1, 1), date(2014 + years - 1, 12, 31), eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    n = symbols * days.len()
    if pattern == "clean":
        flagged = np.zeros(n, dtype=np.uint32)
    elif pattern == "1pct":
        flagged = (np.random.default_rng(1).random(n) < 0.01).astype(np.uint32)
    else:  # every other day
        flagged = (np.arange(n) % 2).astype(np.uint32)
    return pl.DataFrame(
        {
            "symbol": np.repeat([f"S{i:04d}" for i in range(symbols)], days.len()),
            "timeframe": "1d",
            "date": pl.concat([days] * symbols),
            "job_id": "job-perf",
            "rows": np.ones(n, dtype=np.uint32),
            "rejected": np.zeros(n, dtype=np.uint32),
            "flagged": flagged,
            "missing": np.zeros(n, dtype=np.uint32),
            "score": 1.0 - 0.5 * flagged,
        },
        schema=SCORE_SCHEMA,
    )


def actions(count: int, tag: str) -> pl.DataFrame:
    rng = np.random.default_rng(2)
    return pl.DataFrame(
        {
            "symbol": [f"S{i % 500:04d}" for i in range(count)],
            "action_type": [ACTION_TYPES[i % 2] for i in range(count)],  # split, dividend
            "ex_date": [date(2000, 1, 1) + timedelta(days=i // 500) for i in range(count)],
            "ratio": rng.uniform(0.5, 4, count),
            "amount": rng.uniform(0, 2, count),
            "currency": "USD",
            "new_symbol": None,
            "provider": tag,
        }
    ).cast({"ex_date": pl.Date, "new_symbol": pl.String})


def rejected(count: int) -> pl.DataFrame:
    base = pl.DataFrame(schema=QUARANTINE_POLARS_SCHEMA).drop("quarantined_at")
    ts = pl.datetime_range(T0, T0 + timedelta(days=count - 1), "1d", eager=True)
    return base.vstack(
        pl.DataFrame(
            {
                "symbol": [f"S{i % 500:04d}" for i in range(count)],
                "timeframe": "1d",
                "ts": ts,
                "open": 1.0,
                "high": 0.5,
                "low": 1.0,
                "close": 1.0,
                "volume": 1.0,
                "vwap": None,
                "trades": None,
                "provider": "perf",
                "quality_flags": 0,
                "ingested_at": T0,
                "job_id": "job-perf",
                "rule": "ohlc_inconsistent",
                "severity": "error",
                "reason": [f"high {0.5} < low {1.0 + i / 1e6}" for i in range(count)],
            }
        ).cast(dict(base.schema))  # type: ignore[arg-type]
    )


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Sites:
    """Fresh state of each backend: a new lake directory, or a new PostgreSQL schema."""

    def __init__(self, dsn: str, tmp: Path) -> None:
        self.dsn, self.tmp, self.schemas = dsn, tmp, []

    def open(self, kind: str) -> Backend:
        name = f"qv_perf_{uuid4().hex[:8]}"
        if kind == "lake":
            return open_lake(Settings(data_dir=self.tmp / name))
        self.schemas.append(name)
        settings = Settings(
            data_dir=self.tmp / name,
            storage={"backend": "postgres", "postgres_schema": name, "postgres_pool_size": 6},
            services={"postgres_dsn": self.dsn},
        )
        return open_postgres(settings)

    def drop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for name in self.schemas:
                conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def bench_scores(sites: Sites, kind: str, frame: pl.DataFrame) -> dict[str, float]:
    b = sites.open(kind)
    try:
        out = {"add": timed(lambda: b.scores.add(frame, T0))}
        out["read"] = timed(b.scores.read)
        out["daily"] = timed(b.scores.daily)
        assert b.scores.read().height == frame.height
        return out
    finally:
        b.close()


def bench_actions(sites: Sites, kind: str) -> dict[str, float]:
    b = sites.open(kind)
    try:
        batch = actions(5_000, "v1")
        out = {"upsert_5000": timed(lambda: b.actions.upsert(batch))}
        out["upsert_5000_again"] = timed(lambda: b.actions.upsert(batch))
        one = batch.head(1)

        def singles() -> None:
            for i in range(200):
                b.actions.upsert(one.with_columns(amount=pl.lit(float(i))))

        out["upsert_one_ms"] = timed(singles) / 200 * 1000
        out["all"] = timed(b.actions.all)
        return out
    finally:
        b.close()


def bench_claims(sites: Sites, kind: str) -> dict[str, float]:
    out = {}
    for threads in (1, 4):
        b = sites.open(kind)
        try:
            b.catalog.save_job(
                IngestionJob(job_id="job", source_id="s", start_time=T0, status=JobStatus.RUNNING)
            )
            b.catalog.add_tasks(
                [JobTask(task_id=f"t{i}", job_id="job", seq=i, symbols=["S"]) for i in range(1000)]
            )

            def drain(worker: int, b: Backend = b) -> int:
                n = 0
                while (task := b.catalog.claim_task(f"w{worker}", 60, T0)) is not None:
                    b.catalog.finish_task(
                        task.model_copy(update={"status": TaskStatus.SUCCEEDED}), f"w{worker}", T0
                    )
                    n += 1
                return n

            start = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                done = sum(pool.map(drain, range(threads)))
            assert done == 1000
            out[f"claims_per_s_{threads}_threads"] = done / (time.perf_counter() - start)
        finally:
            b.close()
    return out


def bench_side(sites: Sites, kind: str) -> dict[str, float]:
    b = sites.open(kind)
    try:
        rows = rejected(10_000)
        out = {"quarantine_add_10k": timed(lambda: b.quarantine.add(rows, job_id="j", at=T0))}
        out["quarantine_list"] = timed(b.quarantine.list)
        rng = np.random.default_rng(3)
        payloads = [
            RawPayload("acme", f"https://acme/{i}", 200, rng.bytes(50_000), T0) for i in range(200)
        ]
        out["raw_save_200x50kB"] = timed(lambda: b.raw.save("j", payloads))
        out["raw_manifest"] = timed(b.raw.manifest)
        return out
    finally:
        b.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    dsn = Settings().services.postgres_dsn.get_secret_value()
    frames = {p: scores(args.symbols, args.years, p) for p in ("clean", "1pct", "alternate")}
    results: dict[str, Any] = {"score_rows": frames["clean"].height}
    with tempfile.TemporaryDirectory() as tmp:
        sites = Sites(dsn, Path(tmp))
        try:
            for kind in ("lake", "postgres"):
                runs: dict[str, list[float]] = {}
                for _ in range(args.runs):
                    measured: dict[str, float] = {}
                    for pattern, frame in frames.items():
                        got = bench_scores(sites, kind, frame)
                        measured.update({f"scores_{pattern}_{k}": v for k, v in got.items()})
                    measured.update(bench_actions(sites, kind))
                    measured.update(bench_claims(sites, kind))
                    measured.update(bench_side(sites, kind))
                    for key, value in measured.items():
                        runs.setdefault(key, []).append(value)
                results[kind] = {k: round(statistics.median(v), 4) for k, v in runs.items()}
        finally:
            sites.drop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
