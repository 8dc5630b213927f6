"""Worker scale-out: throughput of 1, 2 and 4 `qv worker` processes, and the plan's prediction.

One PostgreSQL schema and one Redis prefix (made for the run, dropped after), the provider
simulator answering Polygon's wire format after 50 ms per call under a rate limit it
counts violations of (our limiter, shared through Redis, enforces the same window). Each
worker runs one task at a time and one fetch at a time, so one worker is bound by latency
(~20 calls/s) and more workers speed up until the quota binds.

For each worker count: a fresh store, the workers started (not timed), then a backfill of
SYMBOLS daily histories planned (`BackfillService.plan`, with the worker count and the
50 ms latency), queued, and timed from submission to the job's end. Prints one JSON line:
per run the calls, measured seconds, calls/s, the plan's predicted seconds and the ratio.
Usage: `python perf/workers.py [SYMBOLS] [QUOTA_PER_S]` (defaults 200, 40).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import psycopg
import redis

from quantivista.config import ProviderFaultSettings, RateWindow, Settings, SimulatorServerSettings
from quantivista.providers.simulator import run_simulator
from quantivista.providers.simulator.wiring import SIMULATOR_API_KEY
from quantivista.runtime import Runtime
from quantivista.testing.workers import WorkerProcesses

FIRST, LAST = date(2023, 1, 3), date(2023, 12, 29)
LATENCY_MS = 50
MARGIN_S = 0.25


def _env(sim_url: str, schema: str, prefix: str, quota: int, tmp: str) -> dict[str, str]:
    # the margin covers a granted call's way to the vendor on a loaded machine
    base = Settings()
    return {
        "QV_DATA_DIR": str(Path(tmp) / "qv"),
        "QV_STORAGE__BACKEND": "postgres",
        "QV_STORAGE__POSTGRES_SCHEMA": schema,
        "QV_STORAGE__POSTGRES_POOL_SIZE": "2",
        "QV_SERVICES__POSTGRES_DSN": base.services.postgres_dsn.get_secret_value(),
        "QV_SERVICES__REDIS_URL": base.services.redis_url,
        "QV_RESILIENCE__BACKEND": "redis",
        "QV_RESILIENCE__REDIS_PREFIX": prefix,
        "QV_RESILIENCE__LIMITS": json.dumps({"polygon": [f"{quota}/1s"]}),
        "QV_RESILIENCE__MARGIN_S": str(MARGIN_S),
        "QV_RESILIENCE__CACHE__ENABLED": "false",  # every run fetches again
        "QV_PROVIDERS__POLYGON__BASE_URL": f"{sim_url}/polygon",
        "QV_PROVIDERS__POLYGON__API_KEY": SIMULATOR_API_KEY,
        "QV_INGEST__SYMBOLS_PER_BATCH": "10",
        "QV_INGEST__FETCH_CONCURRENCY": "1",
        "QV_WORKERS__CONCURRENCY": "1",
        "QV_INGEST__DEFAULT_PROVIDER": "polygon",
        "QV_WORKERS__POLL_S": "0.05",
    }


def _drop(schema: str, prefix: str) -> None:
    base = Settings()
    with psycopg.connect(base.services.postgres_dsn.get_secret_value(), autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    client = redis.Redis.from_url(base.services.redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def run(
    n_workers: int, symbols: list[str], sim_url: str, quota: int, label: str
) -> dict[str, object]:
    """Backfill `symbols` with `n_workers` processes; return calls, times and the plan."""
    schema = f"qv_perf_workers_{uuid.uuid4().hex[:8]}"
    prefix = f"qv-perf-workers:{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(sim_url, schema, prefix, quota, tmp)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            with Runtime.from_settings(Settings()) as rt, WorkerProcesses(n_workers, env):
                plan = rt.backfill.plan(
                    symbols, FIRST, LAST, "1d", ["polygon"], workers=n_workers,
                    latency_s=LATENCY_MS / 1000,
                )  # fmt: skip
                t0 = time.perf_counter()
                (job,) = rt.backfill.submit(plan)
                done = rt.ingestion.wait(job.job_id, timeout_s=300, poll_s=0.02)
                elapsed = time.perf_counter() - t0
        finally:
            os.environ.clear()
            os.environ.update(saved)
            _drop(schema, prefix)
    return {
        "run": label,
        "workers": n_workers,
        "status": done.status.value,
        "calls": plan.calls,
        "bars": done.records_processed,
        "measured_s": round(elapsed, 2),
        "calls_per_s": round(plan.calls / elapsed, 1),
        "predicted_s": round(plan.predicted_s, 2),
        "measured_over_predicted": round(elapsed / plan.predicted_s, 3),
    }


def main() -> None:
    n_symbols = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    quota = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    config = SimulatorServerSettings(
        seed=5,
        universe_size=n_symbols + 40,
        as_of=date(2024, 6, 3),
        providers={
            "polygon": ProviderFaultSettings(
                latency_ms=LATENCY_MS, rate_limits=(RateWindow(calls=quota, seconds=1),)
            )
        },
    )
    runs = []
    with run_simulator(config) as sim:
        alive = set(sim.market.symbols(FIRST)) & set(sim.market.symbols(LAST))
        symbols = sorted(alive)[:n_symbols]
        for n in (1, 2, 4):
            runs.append(run(n, symbols, sim.url, quota, "scaling"))
        # a tight quota: the time is the quota's, whatever the workers could do
        tight = max(quota // 4, 1)
        sim.configure(
            "polygon",
            ProviderFaultSettings(
                latency_ms=LATENCY_MS, rate_limits=(RateWindow(calls=tight, seconds=1),)
            ),
        )
        quota_bound = run(2, symbols[: tight * 10], sim.url, tight, f"quota {tight}/s")
        violations = sim.stats()["providers"]["polygon"]["violations"]
    one = runs[0]["measured_s"]
    report = {
        "bench": "workers",
        "symbols": len(symbols),
        "latency_ms": LATENCY_MS,
        "quota_per_s": quota,
        "runs": runs,
        "speedup": {str(r["workers"]): round(one / r["measured_s"], 2) for r in runs},  # type: ignore[operator]
        "quota_bound": quota_bound,
        "violations": violations,
        "load": os.getloadavg()[0],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
