"""Worker scale-out: throughput of 1, 2 and 4 `qv worker` processes, and the plan's prediction.

One PostgreSQL schema and one Redis prefix (made for the run, dropped after), the provider
simulator (its own process, as a vendor would be) answering Polygon's wire format after
50 ms per call under a rate limit it counts violations of (our limiter, shared through
Redis, enforces the same window and holds each call until its answer). Each worker runs
CONCURRENCY tasks at once, one fetch at a time.

The plan (`BackfillService.plan` with `host`: `services.host_model`) plays the backfill out
on the host's CPUs: the quota, the slots, and the CPU that every task costs, shared by the
workers, the simulator and the database (processor sharing; a process's threads share one
CPU at most; a task's calls in flight overlap its parsing). Its inputs are measured in the
same run, none assumed:
- the costs, on two calibration jobs of one worker (2 and 8 tasks): CPU seconds (/proc,
  user + system) per task of the worker (and of its polars pool threads, outside the GIL:
  /proc/PID/task, threads named polars-N), per call of the simulator's process, per task of
  the PostgreSQL backends the workers use (tagged by application_name; the driver's own
  polling has another tag), each as the difference of the two jobs over their difference
  in tasks or calls, so a job's fixed CPU (set-up, first connections) cancels. Redis
  serves every agent on the host: its CPU is printed, not charged;
- the latency: a call's round trip on the idle system, less the CPU it took (that CPU is
  modelled, under contention);
- the CPUs: the host's (affinity);
- one worker's time per task (`task_s`): a pair of jobs' wall difference over their tasks'
  difference, its pipelining included, the median of CALIBRATION_PAIRS pairs (a burst of
  other work on a shared machine hits a single job of a few seconds); the plan plays one
  worker out in exactly that time (`host_model.fit`: the share of the worker's CPU on the
  tasks' path; past all of it, a slowdown) and a job's fixed seconds (`job_s`: first
  claim, first task's set-up, roll-up) are the small jobs' median time less their tasks'
  played-out time (`calibrate`). With N workers the model adds only what changes: the
  contention of N workers, the simulator and the database on the cores, and the quota.
Printed beside it, not used: the other work's runnable threads (/proc/stat procs_running
less the run's own runnable threads: 1 s before each job, during it every 50 ms, 0.5 s
after; processor sharing with that many busy threads over-states by far what they take
from a run that mostly waits, which the scheduler serves first when it wakes), spinning
processes (read low for the same reason) and a process of 5 ms bursts.
For each worker count: a fresh store, the workers started (not timed), the probes, the plan,
then a backfill of SYMBOLS daily histories queued and timed from submission to the job's
end (its end_time). Prints one JSON line: per run the measured and predicted seconds, the
costs seen in that run and the ratio. Usage: `python perf/workers.py [SYMBOLS] [QUOTA_PER_S]
[REPEATS]` (200, 60, 1); with REPEATS > 1 the report gives each row's range of ratios.
`QV_PERF_TAG=name` puts `name` in the PostgreSQL schema and the Redis prefix.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import polars as pl
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
from quantivista.services.host_model import HostCosts, Scenario, fit, simulate
from quantivista.testing.workers import WorkerProcesses

FIRST, LAST = date(2023, 1, 3), date(2023, 12, 29)
LATENCY_MS = 50
MARGIN_S = 0.0  # calls are held until answered: no margin needed for the limit
CONCURRENCY = 2
CALIBRATION_SYMBOLS = (20, 80)  # two job sizes of one worker: 2 tasks and 8 tasks
CALIBRATION_PAIRS = 3  # the median pair's time per task: a burst of other work hits one
# `QV_PERF_TAG=name`: put a name in the PostgreSQL schema and the Redis prefix (machines
# shared by several runs)
TAG = "".join(c for c in os.environ.get("QV_PERF_TAG", "") if c.isalnum()).lower()


def _tagged(tag: str) -> str:
    """Return the DSN whose backends carry `tag` as application_name (metered by it)."""
    dsn = Settings().services.postgres_dsn.get_secret_value()
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={tag}"


def _env(sim_url: str, schema: str, prefix: str, quota: int, tmp: str) -> dict[str, str]:
    base = Settings()
    tagged = _tagged(schema)  # the workers' backends
    return {
        "QV_DATA_DIR": str(Path(tmp) / "qv"),
        "QV_STORAGE__BACKEND": "postgres",
        "QV_STORAGE__POSTGRES_SCHEMA": schema,
        "QV_STORAGE__POSTGRES_POOL_SIZE": "2",
        "QV_SERVICES__POSTGRES_DSN": tagged,
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


def _cpu_s(pid: int, path: str = "") -> float:
    """Return a process's (or thread's: `path` task/TID) CPU seconds so far (user +
    system, from /proc; 0 once gone)."""
    try:
        fields = Path(f"/proc/{pid}/{path}stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pool_cpu_s(pid: int) -> float:
    """Return the CPU seconds of a process's polars pool threads (named polars-N)."""
    total = 0.0
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0.0
    for tid in threads:
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if name.startswith("polars-") and name[7:].isdigit():
            total += _cpu_s(pid, f"task/{tid}/")
    return total


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


def _bursts(seconds: float, conn: Connection) -> None:
    wall = cpu = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        time.sleep(0.02)
        t0, c0 = time.perf_counter(), time.thread_time()
        while time.thread_time() - c0 < 0.005:
            pass
        wall += time.perf_counter() - t0
        cpu += time.thread_time() - c0
    conn.send(wall / max(cpu, 1e-9))


def slowdown_now(seconds: float = 1.5) -> float:
    """Return the wall seconds a CPU second takes now: a process of 5 ms bursts between
    20 ms waits, as a task's calls are; the scheduler favours such a process over busy
    ones, so spinning processes would say the machine has less to give than it has."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_bursts, args=(seconds, child))
    proc.start()
    value = float(parent.recv())
    proc.join()
    return max(value, 1.0)


def background_now(seconds: float = 1.0) -> float:
    """Return the threads of other work runnable now: the mean of /proc/stat's
    procs_running (every runnable thread on the host) less this reader, sampled every 10 ms
    while the run's own processes are idle (workers polling, the simulator waiting)."""
    counts = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("procs_running"):
                counts.append(int(line.split()[1]) - 1)
                break
        time.sleep(0.01)
    return max(statistics.fmean(counts), 0.0) if counts else 0.0


def _runnable(pids: list[int]) -> int:
    """Return how many threads of `pids` are runnable now (state R in /proc)."""
    count = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            count += stat.rsplit(")", 1)[1].split()[0] == "R"
    return count


class BackgroundMeter:
    """Other work's runnable threads while a job runs: /proc/stat procs_running less the
    run's own runnable threads (workers, simulator, the run's PostgreSQL backends, this
    process), every 50 ms on a thread; the backends' pids are looked up once a second."""

    def __init__(self, pids: list[int], schema: str) -> None:
        self._pids = [*pids, os.getpid()]
        self._schema = schema
        self._stop = threading.Event()
        self._counts: list[int] = []
        self._thread = threading.Thread(target=self._sample, name="background", daemon=True)

    def __enter__(self) -> BackgroundMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return max(statistics.fmean(self._counts), 0.0) if self._counts else 0.0

    def _sample(self) -> None:
        dsn = Settings().services.postgres_dsn.get_secret_value()
        with psycopg.connect(dsn, autocommit=True) as pg:
            backends: list[int] = []
            looked = 0.0
            while not self._stop.wait(0.05):
                if time.perf_counter() - looked > 1.0:
                    rows = pg.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                        (self._schema,),
                    ).fetchall()
                    backends, looked = [pid for (pid,) in rows], time.perf_counter()
                ours = _runnable([*self._pids, *backends])
                for line in Path("/proc/stat").read_text().splitlines():
                    if line.startswith("procs_running"):
                        self._counts.append(int(line.split()[1]) - ours)
                        break


def cpus_of_host() -> float:
    """Return the CPUs this process may run on (its affinity)."""
    return float(len(os.sched_getaffinity(0)))


# -- the simulator in its own process ------------------------------------------------------
def _serve_simulator(config: SimulatorServerSettings, conn: Connection) -> None:
    with run_simulator(config) as sim:
        alive = sorted(set(sim.market.symbols(FIRST)) & set(sim.market.symbols(LAST)))
        conn.send((sim.url, alive))
        while True:
            command, arg = conn.recv()
            if command == "stop":
                return
            if command == "configure":
                sim.configure("polygon", arg)
                conn.send(None)
            elif command == "stats":
                conn.send(sim.stats())


class Simulator:
    """The provider simulator in a child process: its URL, symbols, pid, and commands."""

    def __init__(self, config: SimulatorServerSettings) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_simulator, args=(config, child), daemon=True)
        self.proc.start()
        self.url, self.symbols = self._conn.recv()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def configure(self, faults: ProviderFaultSettings) -> None:
        self._conn.send(("configure", faults))
        self._conn.recv()

    def stats(self) -> dict[str, Any]:
        self._conn.send(("stats", None))
        return self._conn.recv()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._conn.send(("stop", None))
        self.proc.join(timeout=20)


# -- who spends the CPU --------------------------------------------------------------------
class Meter:
    """CPU seconds of the run's processes: workers, simulator, PostgreSQL backends, Redis."""

    def __init__(self, workers: list[int], simulator: int, schema: str) -> None:
        self.workers = workers
        self.simulator = simulator
        self.schema = schema
        base = Settings()
        self._pg = psycopg.connect(base.services.postgres_dsn.get_secret_value(), autocommit=True)
        client = redis.Redis.from_url(base.services.redis_url)
        self._redis_pid = int(client.info("server")["process_id"])
        client.close()
        self._backends: dict[int, float] = {}

    def _store(self) -> float:
        """CPU of the workers' backends (tagged with the run's schema; gone ones keep their
        last); the driver's polling has its own tag, it is not a task's cost."""
        rows = self._pg.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (self.schema,)
        ).fetchall()
        for (pid,) in rows:
            self._backends[pid] = max(self._backends.get(pid, 0.0), _cpu_s(pid))
        return sum(self._backends.values())

    def read(self) -> dict[str, float]:
        # Redis serves every agent on the host: its CPU is printed, not charged to tasks
        return {
            "worker": sum(_cpu_s(p) for p in self.workers),
            "worker_pool": sum(_pool_cpu_s(p) for p in self.workers),
            "provider": _cpu_s(self.simulator),
            "store": self._store(),
            "redis": _cpu_s(self._redis_pid),
        }

    def close(self) -> None:
        self._pg.close()


@contextmanager
def _settings_env(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def round_trip(rt: Runtime, symbol: str, sim: Simulator, calls: int = 10) -> tuple[float, float]:
    """Return a call's median round trip now and the mean CPU it took (ours, the simulator's).

    The median: on a loaded machine one call stalled for 300 ms moves a mean of ten by 25 ms.
    """
    client = rt.acquisition.provider("polygon")
    day = datetime.combine(FIRST, datetime.min.time(), UTC)
    request = BarRequest(symbol, Timeframe.parse("1d"), day, day + timedelta(days=1))
    client.fetch_bars(request)  # the connection is open before timing
    own0, sim0 = time.thread_time(), _cpu_s(sim.pid)
    walls = []
    for _ in range(calls):
        t0 = time.perf_counter()
        client.fetch_bars(request)
        walls.append(time.perf_counter() - t0)
    cpu = (time.thread_time() - own0 + _cpu_s(sim.pid) - sim0) / calls
    return statistics.median(walls), cpu


def run(
    n_workers: int,
    symbols: list[str],
    sim: Simulator,
    quota: int,
    label: str,
    costs: HostCosts | None = None,
) -> dict[str, Any]:
    """Backfill `symbols` with `n_workers` processes; return calls, times, costs and the plan."""
    schema = f"qv_perf_workers_scaleout_{TAG}{uuid.uuid4().hex[:8]}"
    prefix = f"qv-perf-workers-scaleout:{TAG}{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(sim.url, schema, prefix, quota, tmp)
        try:
            driver = {**env, "QV_SERVICES__POSTGRES_DSN": _tagged(f"{schema}_driver")}
            with (
                _settings_env(driver),
                Runtime.from_settings(Settings()) as rt,
                WorkerProcesses(n_workers, env, concurrency=CONCURRENCY) as procs,
            ):
                # the run's processes: the workers, the simulator, PostgreSQL (Redis is light)
                spun = cpus_available(n_workers + 2)
                cpus, slowdown = cpus_of_host(), slowdown_now()
                rtt, rtt_cpu = round_trip(rt, symbols[0], sim)
                # the CPU part is modelled, the rest is waiting
                latency = max(rtt - rtt_cpu, LATENCY_MS / 1000)
                background = background_now()  # other work, just before the job (printed)
                # on_path and the slowdown: fitted to the calibration's one-worker time
                host = None if costs is None else replace(costs, cpus=cpus)
                plan = rt.backfill.plan(
                    symbols, FIRST, LAST, "1d", ["polygon"], workers=n_workers,
                    latency_s=latency if host else rtt, host=host,
                    task_cost_s=0.0, cpus=spun,
                )  # fmt: skip
                meter = Meter([w.pid for w in procs.workers], sim.pid, schema)
                before = meter.read()
                t0, at0 = time.perf_counter(), datetime.now(UTC)
                pids = [w.pid for w in procs.workers] + [sim.pid]
                with BackgroundMeter(pids, schema) as during:
                    (job,) = rt.backfill.submit(plan)
                    done = rt.ingestion.wait(job.job_id, timeout_s=600, poll_s=0.2)
                polled = time.perf_counter() - t0
                after = meter.read()
                meter.close()
                # the job's own end, not the poll's: polling often costs CPU the run needs
                ended = done.end_time or datetime.now(UTC)
                elapsed = (ended - at0).total_seconds()
                background_after = background_now(0.5)  # how the other work moved
                ran = rt.ingestion.tasks(job.job_id)
                first = min(t.started_at or at0 for t in ran) - at0
                last = max(t.finished_at or at0 for t in ran) - at0
        finally:
            _drop(schema, prefix)
    settings = Settings()
    tasks = job.tasks
    used = {k: after[k] - before[k] for k in after}
    quota_s = predicted_seconds(
        plan.calls, [Rate.parse(r) for r in env_limits(quota)], latency_s=rtt,
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
        "polled_s": round(polled, 2),
        "calls_per_s": round(plan.calls / elapsed, 1),
        "cpus": cpus,
        "cpus_spinning": round(spun, 2),
        "slowdown_probed": round(slowdown, 2),
        "background": round(background, 2),
        "background_during": round(during.mean, 2),
        "background_after": round(background_after, 2),
        "model": {k: round(v, 3) for k, v in plan.model.get("polygon", {}).items()},
        "latency_s": latency,
        "round_trip_ms": round(rtt * 1000, 1),
        "round_trip_cpu_ms": round(rtt_cpu * 1000, 1),
        "worker_cpu_s": round(used["worker"], 3),
        "worker_pool_cpu_s": round(used["worker_pool"], 3),
        "provider_cpu_s": round(used["provider"], 3),
        "store_cpu_s": round(used["store"], 3),
        "worker_cpu_s_per_task": round(used["worker"] / max(tasks, 1), 4),
        "provider_cpu_s_per_call": round(used["provider"] / max(plan.calls, 1), 5),
        "store_cpu_s_per_task": round(used["store"] / max(tasks, 1), 4),
        "redis_cpu_s_per_task": round(used["redis"] / max(tasks, 1), 4),
        "bound_quota_s": round(quota_s, 2),
        "predicted_s": round(plan.predicted_s, 2),
        "measured_over_predicted": round(elapsed / plan.predicted_s, 3),
        "first_task_started_s": round(first.total_seconds(), 3),
        "after_last_task_s": round(elapsed - last.total_seconds(), 3),
        # the job's seconds outside its tasks, seen directly (the fit's job_s also has the
        # first task's set-up)
        "outside_tasks_s": round(first.total_seconds() + elapsed - last.total_seconds(), 3),
        "load": round(os.getloadavg()[0], 1),
    }


def env_limits(quota: int) -> list[str]:
    """Return the limiter's windows of the run (the simulator's)."""
    return [f"{quota}/1s"]


def _faults(quota: int) -> ProviderFaultSettings:
    return ProviderFaultSettings(
        latency_ms=LATENCY_MS, rate_limits=(RateWindow(calls=quota, seconds=1),)
    )


def calibrate(pairs: list[tuple[dict[str, Any], dict[str, Any]]], quota: int) -> HostCosts:
    """Return the host's costs from pairs of jobs of one worker, of 2 and of 8 tasks.

    A job costs a fixed part (the first claim, the first task's set-up: connections,
    imports, caches; the roll-up after the last task) and a part per task. The CPU per task
    and per call are the jobs' differences over their tasks' and calls' differences (the
    fixed CPU cancels), summed over the pairs. The growth of the measured time from a small
    job to its large one over their tasks is one worker's time per task, its pipelining
    included; `task_s` is the pairs' median (other work's bursts hit single jobs of a few
    seconds). The plan plays one worker out in it (`host_model.fit`: the share of the
    worker's CPU on the tasks' path; past all of it, a slowdown); the small jobs' median
    time less their tasks' played-out time gives the fixed seconds (`job_s`, at least 0).
    """
    small = {k: sum(float(a[k]) for a, _ in pairs) for k in _SUMMED}
    large = {k: sum(float(b[k]) for _, b in pairs) for k in _SUMMED}
    tasks, calls = large["tasks"] - small["tasks"], large["calls"] - small["calls"]
    growth = [(float(b["measured_s"]) - float(a["measured_s"])) / (b["tasks"] - a["tasks"])
              for a, b in pairs]  # fmt: skip
    costs = HostCosts(
        worker_s_per_task=max(large["worker_cpu_s"] - small["worker_cpu_s"], 0.0) / tasks,
        worker_pool_s_per_task=max(large["worker_pool_cpu_s"] - small["worker_pool_cpu_s"], 0.0)
        / tasks,
        pool_threads=float(pl.thread_pool_size()),  # the workers' pool: same host, same env
        provider_s_per_call=max(large["provider_cpu_s"] - small["provider_cpu_s"], 0.0) / calls,
        store_s_per_task=max(large["store_cpu_s"] - small["store_cpu_s"], 0.0) / tasks,
        cpus=cpus_of_host(),
        task_s=max(statistics.median(growth), 0.0),
    )
    first = pairs[0][0]
    latency = statistics.median(float(a["latency_s"]) for a, _ in pairs)
    fitted = fit(costs, calls_per_task=calls / tasks, concurrency=CONCURRENCY,
                 latency_s=latency)  # fmt: skip
    played = simulate(Scenario(
        first["tasks"], first["calls"], workers=1, concurrency=CONCURRENCY, latency_s=latency,
        costs=fitted, windows=((quota, 1.0 + MARGIN_S),),
    ))  # fmt: skip
    pickup = float(Settings().workers.poll_s)  # the plan adds it besides job_s
    fixed = statistics.median(float(a["measured_s"]) for a, _ in pairs) - pickup - played
    # the plan fits again (the same way, with its latency): the costs go as measured
    return replace(costs, job_s=max(fixed, 0.0))


_SUMMED = ("tasks", "calls", "worker_cpu_s", "worker_pool_cpu_s", "provider_cpu_s", "store_cpu_s")


def one_round(sim: Simulator, symbols: list[str], quota: int) -> dict[str, Any]:
    """Calibrate, then 1, 2 and 4 workers, then a tight quota; return the round's runs."""
    sim.configure(_faults(quota))
    # the costs, measured: pairs of jobs of one worker (fixed and per-task parts apart)
    small, large = CALIBRATION_SYMBOLS
    pairs = [
        (run(1, symbols[:small], sim, quota, f"calibration {small}"),
         run(1, symbols[:large], sim, quota, f"calibration {large}"))
        for _ in range(CALIBRATION_PAIRS)
    ]  # fmt: skip
    costs = calibrate(pairs, quota)
    fitted = fit(costs, calls_per_task=10, concurrency=CONCURRENCY,
                 latency_s=statistics.median(float(a["latency_s"]) for a, _ in pairs))  # fmt: skip
    calibration = {
        "pairs": pairs,
        "task_s_per_pair": [
            round((b["measured_s"] - a["measured_s"]) / (b["tasks"] - a["tasks"]), 4)
            for a, b in pairs
        ],
        "costs": {k: round(v, 5) for k, v in asdict(costs).items()},
        "on_path": round(fitted.on_path, 4),
        "slowdown": round(fitted.slowdown, 3),
    }
    runs = [run(n, symbols, sim, quota, "scaling", costs) for n in (1, 2, 4)]
    # a tight quota: the time is the quota's, whatever the workers could do
    tight = max(quota // 6, 1)
    sim.configure(_faults(tight))
    quota_bound = run(2, symbols[: tight * 10], sim, tight, f"quota {tight}/s", costs)
    return {"calibration": calibration, "runs": runs, "quota_bound": quota_bound}


def main() -> None:
    n_symbols = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    quota = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    config = SimulatorServerSettings(
        seed=5,
        universe_size=n_symbols + 40,
        as_of=date(2024, 6, 3),
        providers={"polygon": _faults(quota)},
    )
    sim = Simulator(config)
    try:
        symbols = sim.symbols[:n_symbols]
        rounds = [one_round(sim, symbols, quota) for _ in range(repeats)]
        violations = sim.stats()["providers"]["polygon"]["violations"]
    finally:
        sim.close()
    rows: dict[str, list[float]] = {}
    speedups: dict[str, list[float]] = {}
    for r in rounds:
        one = r["runs"][0]["measured_s"]
        for x in [*r["runs"], r["quota_bound"]]:
            key = f"{x['workers']} workers" if x["run"] == "scaling" else x["run"]
            rows.setdefault(key, []).append(x["measured_over_predicted"])
            if x["run"] == "scaling":
                speedups.setdefault(str(x["workers"]), []).append(round(one / x["measured_s"], 2))
    backgrounds: dict[str, list[list[float]]] = {}
    for r in rounds:
        for x in [*r["runs"], r["quota_bound"]]:
            key = f"{x['workers']} workers" if x["run"] == "scaling" else x["run"]
            backgrounds.setdefault(key, []).append(
                [x["background"], x["background_during"], x["background_after"]]
            )
    ratios = [v for vs in rows.values() for v in vs]
    report = {
        "bench": "workers",
        "symbols": len(symbols),
        "latency_ms": LATENCY_MS,
        "quota_per_s": quota,
        "concurrency": CONCURRENCY,
        "repeats": repeats,
        "ratio_range": {k: [min(v), max(v)] for k, v in rows.items()},
        "ratios": rows,
        "backgrounds": backgrounds,
        "speedup_range": {k: [min(v), max(v)] for k, v in speedups.items()},
        "within_20pct": all(0.8 <= r <= 1.2 for r in ratios),
        "violations": violations,
        "rounds": rounds,
        "load": os.getloadavg()[0],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
