"""`qv scheduler`: slots from cron lines and exchange closes on a fake clock, catch-up after a
restart, leases (file lock and PostgreSQL advisory lock), the built-in jobs on a real store,
and two real `qv scheduler` processes handing the lease over on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.errors import ConfigurationError
from quantivista.providers.simulator import SimulatedMarket
from quantivista.reference.calendars import get_calendar
from quantivista.runtime import Runtime
from quantivista.services.scheduler import (
    JobContext,
    JobRegistry,
    Scheduler,
    Skipped,
    universe,
)
from quantivista.storage.lake.lease import FileLease
from quantivista.storage.postgres.lease import AdvisoryLease

MON = datetime(2024, 6, 3, 1, 0, tzinfo=UTC)


class Calls:
    """A job registry whose jobs record the slots they ran for."""

    def __init__(self) -> None:
        self.slots: list[tuple[str, datetime]] = []
        self.registry = JobRegistry()
        self.registry.register("count", self.count)
        self.registry.register("boom", self.boom)
        self.registry.register("idle", self.idle)

    def count(self, ctx: JobContext) -> dict[str, Any]:
        self.slots.append((ctx.entry if ctx.exchange is None else ctx.exchange, ctx.scheduled_for))
        return {"n": len(self.slots)}

    def boom(self, ctx: JobContext) -> None:
        raise OSError("disk gone")

    def idle(self, ctx: JobContext) -> None:
        raise Skipped("nothing to do")


def _scheduler(
    root: Path, clock: TestClock, calls: Calls, entries: Mapping[str, Any]
) -> tuple[Scheduler, Runtime]:
    settings = Settings(data_dir=root, scheduler={"entries": entries})  # type: ignore[arg-type]
    runtime = Runtime(settings, clock=clock)
    scheduler = Scheduler(
        settings.scheduler,
        catalog=runtime.backend.catalog,
        clock=clock,
        lease=FileLease(root, "scheduler"),
        calendar=get_calendar,
        context=lambda t, at: JobContext(runtime, t.entry, at, t.spec.args, t.exchange),
        jobs=calls.registry,
    )
    return scheduler, runtime


@pytest.fixture
def calls() -> Calls:
    return Calls()


def test_cron_runs_each_slot_once_and_catches_up_once_after_a_restart(
    tmp_path: Path, calls: Calls
) -> None:
    clock = TestClock(MON)
    entries = {"nightly": {"job": "count", "cron": "0 2 * * *"}}
    scheduler, runtime = _scheduler(tmp_path, clock, calls, entries)
    assert scheduler.tick() == []  # armed: the first slot is the next one
    clock.advance(3600 + 30)
    [run] = scheduler.tick()
    assert (run.outcome, run.scheduled_for) == ("succeeded", datetime(2024, 6, 3, 2, tzinfo=UTC))
    assert scheduler.tick() == []  # the slot is done
    scheduler.lease.release()
    runtime.close()
    clock.advance(3 * 86400)  # down for three nights: on restart, one run for the latest slot
    again, runtime = _scheduler(tmp_path, clock, calls, entries)
    [late] = again.tick()
    assert late.scheduled_for == datetime(2024, 6, 6, 2, tzinfo=UTC)
    assert again.tick() == []
    assert [s for _, s in calls.slots] == [run.scheduled_for, late.scheduled_for]
    kept = again.state("nightly")
    assert kept is not None and kept["outcome"] == "succeeded" and kept["detail"] == {"n": 2}
    again.lease.release()
    runtime.close()


def test_after_close_follows_each_exchange_early_closes_and_weekends(
    tmp_path: Path, calls: Calls
) -> None:
    clock = TestClock(datetime(2024, 11, 29, 12, 0, tzinfo=UTC))  # Black Friday: 13:00 close
    entries = {"eod": {"job": "count", "after_close": ["XNYS", "XLON"], "offset_minutes": 30}}
    scheduler, runtime = _scheduler(tmp_path, clock, calls, entries)
    assert scheduler.tick() == []
    by_key = {t.key: t for t in scheduler.triggers}
    assert set(by_key) == {"eod@XNYS", "eod@XLON"}
    nyse = by_key["eod@XNYS"]
    assert nyse.next_after(clock.now(), get_calendar) == datetime(2024, 11, 29, 18, 30, tzinfo=UTC)
    friday_slot = datetime(2024, 11, 29, 18, 30, tzinfo=UTC)
    assert nyse.next_after(friday_slot, get_calendar) == datetime(2024, 12, 2, 21, 30, tzinfo=UTC)
    clock.advance(6.5 * 3600 - 60)  # 18:29 UTC: London ran at 17:00, New York not yet
    assert [r.key for r in scheduler.tick()] == ["eod@XLON"]
    clock.advance(120)
    [run] = scheduler.tick()
    assert (run.key, run.scheduled_for) == ("eod@XNYS", friday_slot)
    clock.advance(2 * 86400)  # the weekend: no close, nothing to run
    assert scheduler.tick() == []
    scheduler.lease.release()
    runtime.close()


def test_failures_and_skips_are_recorded_and_the_loop_goes_on(tmp_path: Path, calls: Calls) -> None:
    clock = TestClock(MON)
    entries = {
        "a-boom": {"job": "boom", "cron": "*/5 * * * *"},
        "b-idle": {"job": "idle", "cron": "*/5 * * * *"},
        "c-count": {"job": "count", "cron": "*/5 * * * *"},
    }
    scheduler, runtime = _scheduler(tmp_path, clock, calls, entries)
    scheduler.tick()
    clock.advance(300)
    runs = scheduler.tick()
    assert [(r.key, r.outcome) for r in runs] == [
        ("a-boom", "failed"), ("b-idle", "skipped"), ("c-count", "succeeded"),
    ]  # fmt: skip
    assert runs[0].detail == {"error": "OSError: disk gone"}
    status = scheduler.status()
    assert status["outcome"].to_list() == ["failed", "skipped", "succeeded"]
    assert status["next_slot"].to_list() == ["2024-06-03T01:10:00+00:00"] * 3
    scheduler.lease.release()
    runtime.close()


def test_an_unknown_job_or_a_bad_entry_fails_at_start(tmp_path: Path, calls: Calls) -> None:
    with pytest.raises(ConfigurationError, match="no scheduled job"):
        _scheduler(tmp_path, TestClock(MON), calls, {"x": {"job": "nope", "cron": "0 2 * * *"}})
    with pytest.raises(ConfigurationError, match="either cron or after_close"):
        Settings(scheduler={"entries": {"x": {"job": "count"}}})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a cron line"):
        Settings(scheduler={"entries": {"x": {"job": "count", "cron": "61 * * *"}}})  # type: ignore[arg-type]


def test_a_standby_runs_nothing_until_the_leader_lets_go(tmp_path: Path, calls: Calls) -> None:
    clock = TestClock(MON)
    entries = {"often": {"job": "count", "cron": "* * * * *"}}
    leader, rt1 = _scheduler(tmp_path, clock, calls, entries)
    standby, rt2 = _scheduler(tmp_path, clock, calls, entries)
    leader.tick()
    standby.tick()
    assert (leader.leader, standby.leader) == (True, False)
    clock.advance(60)
    assert len(leader.tick()) == 1 and standby.tick() == []
    assert FileLease(tmp_path, "scheduler").holder() == {
        "pid": os.getpid(), "host": socket.gethostname()
    }  # fmt: skip
    leader.lease.release()
    clock.advance(60)
    assert len(standby.tick()) == 1 and standby.leader
    standby.lease.release()
    rt1.close()
    rt2.close()


@pytest.mark.postgres
def test_the_postgres_lease_is_exclusive_and_dies_with_its_session(postgres_dsn: str) -> None:
    name = f"qv-test-{uuid.uuid4().hex}"
    first, second = AdvisoryLease(postgres_dsn, name), AdvisoryLease(postgres_dsn, name)
    try:
        assert first.acquire() and first.renew()
        assert not second.acquire()
        first.release()
        assert not first.held and second.acquire()
        assert second._conn is not None
        pid = second._conn.info.backend_pid
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:  # the session dies
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert not second.renew()
        assert first.acquire()
    finally:
        first.release()
        second.release()


def test_the_built_in_jobs_on_a_real_store(tmp_path: Path) -> None:
    clock = TestClock(datetime(2024, 6, 4, 2, 0, tzinfo=UTC))
    settings = Settings(
        data_dir=tmp_path / "qv",
        simulator={"universe_size": 4},  # type: ignore[arg-type]
        scheduler={
            "backup_dir": tmp_path / "backups",
            "keep_backups": 1,
            "entries": {
                "universe-update": {"job": "universe_update", "after_close": ["XNYS"]},
                "retention": {"job": "retention", "cron": "15 2 * * *"},
                "backup": {"job": "backup", "cron": "30 2 * * *"},
                "compaction": {"job": "compaction", "cron": "0 3 * * 0"},
            },
        },
    )  # type: ignore[arg-type]
    with Runtime(settings, clock=clock) as rt:
        scheduler = Scheduler.from_runtime(rt)
        by_key = {t.key: t for t in scheduler.triggers}
        assert scheduler.run(by_key["universe-update@XNYS"], clock.now()).outcome == "skipped"
        market = SimulatedMarket(seed=settings.simulator.seed, universe_size=4)
        rt.reference.instruments.load_simulator(market)
        names = universe(rt, "XNYS", date(2024, 6, 3))
        assert names and len(names) <= 8
        update = scheduler.run(by_key["universe-update@XNYS"], clock.now())
        assert update.outcome == "succeeded", update.detail
        assert update.detail["session"] == "2024-06-03"
        assert rt.ingestion.job(update.detail["job_id"]).status.value in ("succeeded", "partial")
        assert scheduler.run(by_key["retention"], clock.now()).outcome == "succeeded"
        assert scheduler.run(by_key["compaction"], clock.now()).outcome == "succeeded"
        first = scheduler.run(by_key["backup"], clock.now())
        clock.advance(86400)
        second = scheduler.run(by_key["backup"], clock.now())
        assert (first.outcome, second.outcome) == ("succeeded", "succeeded"), second.detail
        kept = sorted(p.name for p in (tmp_path / "backups").iterdir())
        assert kept == [Path(second.detail["dest"]).name]  # keep_backups=1 pruned the first
        assert second.detail["pruned"] == [Path(first.detail["dest"]).name]
        assert (Path(second.detail["dest"]) / "manifest.json").is_file()  # a complete backup


# -- two real processes ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric(port: int, name: str) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


def _until(check: Any, timeout_s: float = 30) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []
    qv = Path(sys.executable).with_name("qv")

    def start(port: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "QV_DATA_DIR": str(tmp_path / "qv"),
            "QV_PROBES__PORTS": json.dumps({"scheduler": port}),
            "QV_SCHEDULER__TICK_S": "0.2",
            "QV_SCHEDULER__ENTRIES": json.dumps(
                {"every-second": {"job": "retention", "cron": "* * * * * *"}}
            ),
        }
        with (tmp_path / f"scheduler-{port}.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(qv), "scheduler"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_processes_one_leader_and_a_graceful_handover(spawn: Any) -> None:
    port_a, port_b = _free_port(), _free_port()
    a = spawn(port_a)
    _until(lambda: httpx.get(f"http://127.0.0.1:{port_a}/healthz", timeout=2).status_code == 200
           if _metric(port_a, "qv_scheduler_leader") is not None else False)  # fmt: skip
    assert _until(lambda: _metric(port_a, "qv_scheduler_leader") == 1)
    ran = 'qv_scheduler_last_run_timestamp_seconds{entry="every-second",outcome="succeeded"}'
    assert _until(lambda: _metric(port_a, ran))
    assert httpx.get(f"http://127.0.0.1:{port_a}/readyz").json()["checks"] == {
        "store": "ok", "loop": "ok"
    }  # fmt: skip
    b = spawn(port_b)
    _until(lambda: _metric(port_b, "qv_scheduler_leader") is not None)
    time.sleep(1)
    assert _metric(port_b, "qv_scheduler_leader") == 0  # a standby
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=20) == 0
    assert _until(lambda: _metric(port_b, "qv_scheduler_leader") == 1, 20)
    assert _until(lambda: _metric(port_b, ran))
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=20) == 0


def test_the_scheduler_runs_due_reporting_sources_once_per_tick(tmp_path: Path) -> None:
    from quantivista.model.workflow import DataSource
    from quantivista.reporting.simulate import simulate_workflows

    clock = TestClock(datetime(2026, 12, 4, 13, 0, tzinfo=UTC))
    simulate_workflows(tmp_path / "wf", rows=50, datasets=("risk",))
    settings = Settings(
        data_dir=tmp_path / "qv",
        scheduler={"entries": {"sources": {"job": "workflow_sources", "cron": "* * * * *"}}},
    )  # type: ignore[arg-type]
    with Runtime(settings, clock=clock) as rt:
        rt.workflows.register_source("acme", DataSource(
            source_id="risk", source_type="PORTFOLIO_MANAGEMENT",
            ingestion_mode="BATCH_SCHEDULED", schedule="*/5 * * * *", data_format="PARQUET",
            location=str(tmp_path / "wf" / "risk.parquet"),
            target_table="risk_metrics"))  # fmt: skip
        scheduler = Scheduler.from_runtime(rt)
        [trigger] = scheduler.triggers
        assert scheduler.run(trigger, clock.now()).outcome == "skipped"  # no tick since creation
        clock.advance(6 * 60)
        ran = scheduler.run(trigger, clock.now())
        assert ran.outcome == "succeeded", ran.detail
        [job_id] = ran.detail["jobs"].values()
        assert rt.workflows.job("acme", job_id).records_processed == 50
        assert scheduler.run(trigger, clock.now()).outcome == "skipped"  # that tick is done
