"""The scale-out test of record: 3 `qv worker` processes on one PostgreSQL + Redis.

Run against both task queues: the job catalog's (`FOR UPDATE SKIP LOCKED`) and a NATS
JetStream work-queue stream (`workers.queue_url`, a stream of its own per run).

A 300-symbol backfill is queued; the workers fetch it through the provider simulator (real
sockets, vendor wire formats, injected faults, rate limits it counts violations of), one
worker is killed with SIGKILL in the middle of a task; its tasks are re-leased by the others,
the job completes, no bar is lost or stored twice, and the simulator counts no violation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import polars as pl
import psycopg
import pytest

from quantivista.config import ProviderFaultSettings, RateWindow, Settings, SimulatorServerSettings
from quantivista.model.jobs import JobStatus, TaskStatus
from quantivista.providers.simulator import run_simulator
from quantivista.providers.simulator.server import SimulatorHandle
from quantivista.providers.simulator.wiring import SIMULATOR_API_KEY
from quantivista.runtime import Runtime
from quantivista.services.queries import BarQuery
from quantivista.testing.workers import WorkerProcesses

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

FIRST, LAST = date(2024, 1, 2), date(2024, 3, 28)
SYMBOLS = 300
YAHOO = (RateWindow(calls=40, seconds=1),)
POLYGON = (RateWindow(calls=20, seconds=1),)


@pytest.fixture
def sim() -> Iterator[SimulatorHandle]:
    config = SimulatorServerSettings(
        seed=11,
        universe_size=330,
        as_of=date(2024, 6, 3),
        providers={
            "yahoo": ProviderFaultSettings(
                rate_limits=YAHOO, error_rate=0.05, malformed_rate=0.03, error_body_rate=0.02,
                latency_ms=10,
            ),
            "polygon": ProviderFaultSettings(rate_limits=POLYGON, latency_ms=10),
        },
    )  # fmt: skip
    with run_simulator(config) as handle:
        yield handle


@pytest.fixture(params=["catalog", pytest.param("nats", marks=pytest.mark.nats)])
def cluster_env(
    request: pytest.FixtureRequest,
    sim: SimulatorHandle,
    postgres_dsn: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """Settings of every process of the run, as QV_* variables (also set for this one)."""
    schema = f"qv_test_scaleout_{uuid.uuid4().hex[:8]}"
    prefix = f"qv-test-scaleout:{uuid.uuid4().hex[:8]}"
    queue_url = None
    if request.param == "nats":
        queue_url = f"{request.getfixturevalue('nats_url')}?prefix=qvt{uuid.uuid4().hex[:8]}"
    env = {
        "QV_DATA_DIR": str(tmp_path / "qv"),
        "QV_STORAGE__BACKEND": "postgres",
        "QV_STORAGE__POSTGRES_SCHEMA": schema,
        "QV_STORAGE__POSTGRES_POOL_SIZE": "3",
        "QV_SERVICES__POSTGRES_DSN": postgres_dsn,
        "QV_SERVICES__REDIS_URL": redis_url,
        "QV_RESILIENCE__BACKEND": "redis",
        "QV_RESILIENCE__REDIS_PREFIX": prefix,
        "QV_RESILIENCE__LIMITS": '{"yahoo": ["40/1s"], "polygon": ["20/1s"]}',
        # no margin: a call stays in its windows until its answer is back, so however long a
        # loaded machine delays it between grant and arrival, the simulator sees the limit
        "QV_RESILIENCE__MARGIN_S": "0",
        "QV_RESILIENCE__RETRY__BASE_DELAY_S": "0.01",
        "QV_RESILIENCE__RETRY__MAX_DELAY_S": "0.1",
        "QV_INGEST__SYMBOLS_PER_BATCH": "10",
        "QV_INGEST__FETCH_CONCURRENCY": "2",
        "QV_INGEST__LEASE_S": "3",
        "QV_INGEST__HEARTBEAT_S": "0.5",
        "QV_WORKERS__POLL_S": "0.1",
        "QV_WORKERS__REAP_S": "0.5",
    }
    for vendor in ("yahoo", "polygon"):
        section = f"QV_PROVIDERS__{vendor.upper()}__"
        env[section + "BASE_URL"] = sim.base_url(vendor)
        env[section + "API_KEY"] = SIMULATOR_API_KEY
        env[section + "TIMEOUT_S"] = "2"
    if queue_url is not None:
        env["QV_WORKERS__QUEUE_URL"] = queue_url
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    if queue_url is not None:
        from quantivista.bus.task_queue import NatsTaskQueue

        stream = NatsTaskQueue(queue_url, "default")
        assert stream.pending() == 0  # every task message was acked: none left behind
        stream.delete()
        stream.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _symbols(sim: SimulatorHandle) -> list[str]:
    alive = set(sim.market.symbols(FIRST)) & set(sim.market.symbols(LAST))
    return sorted(alive)[:SYMBOLS]


def test_three_workers_one_killed_mid_task_lose_and_duplicate_nothing(
    sim: SimulatorHandle, cluster_env: dict[str, str], tmp_path: Path
) -> None:
    syms = _symbols(sim)
    assert len(syms) == SYMBOLS
    settings = Settings()
    assert settings.resilience.limits["yahoo"] == ["40/1s"]
    with Runtime.from_settings(settings) as rt:  # migrates the schema before workers race to
        assert rt.backend.kind == "postgres"
        with WorkerProcesses(3, cluster_env, concurrency=2, log_dir=tmp_path) as workers:
            job = rt.ingestion.enqueue(syms, FIRST, LAST, providers=["yahoo", "polygon"])
            assert job.tasks == 30
            victim = workers.workers[0]
            deadline = time.monotonic() + 40
            held: list[str] = []
            while time.monotonic() < deadline:
                tasks = rt.ingestion.tasks(job.job_id)
                done = sum(t.status is TaskStatus.SUCCEEDED for t in tasks)
                held = [t.task_id for t in tasks
                        if t.status is TaskStatus.RUNNING and t.worker == victim.name]  # fmt: skip
                if done >= 3 and held:
                    break
                time.sleep(0.02)
            else:
                pytest.fail("the victim never held a task after the first ones finished")
            workers.kill(victim)
            # a task the victim finished between the look and the kill is done, once, by it
            # (attempts 1): what it still holds now is what a survivor must take over
            held = [t.task_id for t in rt.ingestion.tasks(job.job_id)
                    if t.task_id in held and t.status is TaskStatus.RUNNING]  # fmt: skip
            assert held, "the victim finished every task it held before the kill landed"
            finished = rt.ingestion.wait(job.job_id, timeout_s=45, poll_s=0.2)
            codes = workers.stop()
        assert codes[0] == -9 and codes[1:] == [0, 0]  # the others stop gracefully

        assert finished.status in (JobStatus.SUCCEEDED, JobStatus.PARTIAL), finished.error_details
        tasks = rt.ingestion.tasks(job.job_id)
        assert all(t.status is TaskStatus.SUCCEEDED for t in tasks)
        assert sum(t.symbols_failed for t in tasks) == 0
        # the victim's tasks were leased again by a survivor and finished there
        for task in (t for t in tasks if t.task_id in held):
            assert task.attempts >= 2 and task.worker != victim.name
        assert any(d.get("kind") == "lease_expired" and d.get("worker") == victim.name
                   for d in finished.error_details)  # fmt: skip
        assert len({t.worker for t in tasks} - {victim.name}) == 2  # both survivors worked

        # nothing lost, nothing twice: every bar of the market is stored or quarantined once
        stored = rt.queries.bars(BarQuery.of(syms, FIRST, LAST))
        assert stored.select(pl.struct("symbol", "ts").is_unique().all()).item()
        expected = sum(sim.market.daily(s, FIRST, LAST).height for s in syms)
        quarantined = rt.quality.quarantine(None, job.job_id).height
        assert stored.height + quarantined == expected
        assert stored["symbol"].n_unique() == SYMBOLS
        assert finished.records_processed == expected
        assert finished.records_failed == quarantined

    stats = sim.stats()["providers"]
    assert stats["yahoo"]["violations"] == 0 and stats["polygon"]["violations"] == 0
    assert stats["yahoo"]["calls"] >= SYMBOLS * 0.9  # the primary served (faults included)
    assert sum(stats["yahoo"]["faults"].values()) > 0  # and faults were injected
