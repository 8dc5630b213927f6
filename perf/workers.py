"""Worker scale-out: throughput of 1, 2 and 4 `qv worker` processes, and the plan's prediction.

One PostgreSQL schema and one Redis prefix (made for the run, dropped after), the provider
simulator answering Polygon's wire format after 50 ms per call under a rate limit it
counts violations of (our limiter, shared through Redis, enforces the same window and holds
each call until its answer). Each worker runs CONCURRENCY tasks at once, one fetch at a time.

What bounds a run, and what the plan models (`BackfillService.plan`): the quota, the slots
(latency x calls per task + a task's own cost, one task after another) and the CPU (every
task's own cost over the CPUs the workers get). Two inputs are measured in the same run:
- task cost: CPU seconds per task of one worker on a calibration job (/proc, user + system);
- CPUs: before each run, as many spinning processes as workers for 1 s; the CPU seconds
  they got is what the workers will get on this (shared, loaded) machine.
For each worker count: a fresh store, the workers started (not timed), the CPU probe, the
plan, then a backfill of SYMBOLS daily histories queued and timed from submission to the
job's end. Prints one JSON line: per run calls, tasks, measured and predicted seconds, the
bounds and the ratio. Usage: `python perf/workers.py [SYMBOLS] [QUOTA_PER_S]` (200, 60).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import redis

from quantivista.config import ProviderFaultSettings, RateWindow, Settings, SimulatorServerSettings
from quantivista.model.rates import Rate
from quantivista.model.timeframe import Timeframe
from quantivista.providers.base import BarRequest
from quantivista.providers.simulator import run_simulator
from quantivista.providers.simulator.wiring import SIMULATOR_API_KEY
from quantivista.runtime import Runtime
from quantivista.services.backfill import predicted_seconds
from quantivista.testing.workers import WorkerProcesses

FIRST, LAST = date(2023, 1, 3), date(2023, 12, 29)
LATENCY_MS = 50
MARGIN_S = 0.0  # calls are held until answered: no margin needed for the limit
CONCURRENCY = 2
CALIBRATION_SYMBOLS = 60


def _env(sim_url: str, schema: str, prefix: str, quota: int, tmp: str) -> dict[str, str]:
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
        "QV_RESILIENCE__LIMITS": json.dumps({"polygon": env_limits(quota)}),
        "QV_RESILIENCE__MARGIN_S": str(MARGIN_S),
        "QV_RESILIENCE__CACHE__ENABLED": "false",  # every run fetches again
        "QV_PROVIDERS__POLYGON__BASE_URL": f"{sim_url}/polygon",
        "QV_PROVIDERS__POLYGON__API_KEY": SIMULATOR_API_KEY,
        "QV_INGEST__SYMBOLS_PER_BATCH": "10",
        "QV_INGEST__FETCH_CONCURRENCY": "1",
        "QV_WORKERS__CONCURRENCY": str(CONCURRENCY),
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


def _cpu_s(pid: int) -> float:
    """Return a process's CPU seconds so far (user + system, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def cpus_available(n: int, seconds: float = 1.5) -> float:
    """Return the CPUs `n` busy processes get now: their CPU seconds over the wall time.

    Sampled between two reads once every process runs, so a slow fork does not count.
    """
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_spin, args=(seconds + 1.0,)) for _ in range(n)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    pids = [p.pid for p in procs if p.pid is not None]
    t0, used0 = time.perf_counter(), sum(_cpu_s(p) for p in pids)
    time.sleep(seconds)
    used = sum(_cpu_s(p) for p in pids) - used0
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return max(used / wall, 0.05)


def round_trip_s(rt: Runtime, symbol: str, calls: int = 10) -> float:
    """Return the mean time of one call now, through our client and the shared limiter."""
    client = rt.acquisition.provider("polygon")
    day = datetime.combine(FIRST, datetime.min.time(), UTC)
    request = BarRequest(symbol, Timeframe.parse("1d"), day, day + timedelta(days=1))
    client.fetch_bars(request)  # the connection is open before timing
    t0 = time.perf_counter()
    for _ in range(calls):
        client.fetch_bars(request)
    return (time.perf_counter() - t0) / calls


def run(
    n_workers: int,
    symbols: list[str],
    sim_url: str,
    quota: int,
    label: str,
    task_cost_s: float | None = None,
) -> dict[str, object]:
    """Backfill `symbols` with `n_workers` processes; return calls, times and the plan."""
    schema = f"qv_perf_workers_{uuid.uuid4().hex[:8]}"
    prefix = f"qv-perf-workers:{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(sim_url, schema, prefix, quota, tmp)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            with (
                Runtime.from_settings(Settings()) as rt,
                WorkerProcesses(n_workers, env, concurrency=CONCURRENCY) as procs,
            ):
                cpus = cpus_available(n_workers)
                latency = round_trip_s(rt, symbols[0])
                plan = rt.backfill.plan(
                    symbols, FIRST, LAST, "1d", ["polygon"], workers=n_workers,
                    latency_s=latency, task_cost_s=task_cost_s or 0.0, cpus=cpus,
                )  # fmt: skip
                pids = [w.pid for w in procs.workers]
                cpu0 = sum(_cpu_s(p) for p in pids)
                t0, at0 = time.perf_counter(), datetime.now(UTC)
                (job,) = rt.backfill.submit(plan)
                done = rt.ingestion.wait(job.job_id, timeout_s=600, poll_s=0.02)
                elapsed = time.perf_counter() - t0
                # where a job's fixed cost goes: until the first task starts, after the last
                ran = rt.ingestion.tasks(job.job_id)
                first = min(t.started_at or at0 for t in ran) - at0
                last = max(t.finished_at or at0 for t in ran) - at0
                cpu = sum(_cpu_s(p) for p in pids) - cpu0
        finally:
            os.environ.clear()
            os.environ.update(saved)
            _drop(schema, prefix)
    settings = Settings()
    tasks = job.tasks
    quota_s = predicted_seconds(
        plan.calls, [Rate.parse(r) for r in env_limits(quota)], latency_s=latency,
        concurrency=n_workers * CONCURRENCY * settings.ingest.fetch_concurrency,
    )  # fmt: skip
    return {
        "run": label,
        "workers": n_workers,
        "status": done.status.value,
        "calls": plan.calls,
        "tasks": tasks,
        "bars": done.records_processed,
        "measured_s": round(elapsed, 2),
        "calls_per_s": round(plan.calls / elapsed, 1),
        "cpus_probed": round(cpus, 2),
        "latency_probed_ms": round(latency * 1000, 1),
        "worker_cpu_s_per_task": round(cpu / max(tasks, 1), 3),
        "bound_quota_s": round(quota_s, 2),
        "predicted_s": round(plan.predicted_s, 2),
        "measured_over_predicted": round(elapsed / plan.predicted_s, 3),
        "first_task_started_s": round(first.total_seconds(), 3),
        "after_last_task_s": round(elapsed - last.total_seconds(), 3),
    }


def env_limits(quota: int) -> list[str]:
    """Return the limiter's windows of the run (the simulator's)."""
    return [f"{quota}/1s"]


def main() -> None:
    n_symbols = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    quota = int(sys.argv[2]) if len(sys.argv) > 2 else 60
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
        # the task cost, measured: one worker's CPU seconds per task of a small job
        calibration = run(1, symbols[:CALIBRATION_SYMBOLS], sim.url, quota, "calibration")
        cost = float(calibration["worker_cpu_s_per_task"])  # type: ignore[arg-type]
        for n in (1, 2, 4):
            runs.append(run(n, symbols, sim.url, quota, "scaling", cost))
        # a tight quota: the time is the quota's, whatever the workers could do
        tight = max(quota // 6, 1)
        sim.configure(
            "polygon",
            ProviderFaultSettings(
                latency_ms=LATENCY_MS, rate_limits=(RateWindow(calls=tight, seconds=1),)
            ),
        )
        quota_bound = run(2, symbols[: tight * 10], sim.url, tight, f"quota {tight}/s", cost)
        violations = sim.stats()["providers"]["polygon"]["violations"]
    one = runs[0]["measured_s"]
    ratios = [r["measured_over_predicted"] for r in [*runs, quota_bound]]
    report = {
        "bench": "workers",
        "symbols": len(symbols),
        "latency_ms": LATENCY_MS,
        "quota_per_s": quota,
        "concurrency": CONCURRENCY,
        "task_cost_s": cost,
        "calibration": calibration,
        "runs": runs,
        "speedup": {str(r["workers"]): round(one / r["measured_s"], 2) for r in runs},  # type: ignore[operator]
        "quota_bound": quota_bound,
        "within_20pct": all(0.8 <= float(r) <= 1.2 for r in ratios),  # type: ignore[arg-type]
        "violations": violations,
        "load": os.getloadavg()[0],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
