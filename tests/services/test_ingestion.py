"""Ingestion jobs as tasks under leases: submit, run, expire, recover, and a real kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from quantivista.cli import app
from quantivista.clock import TestClock
from quantivista.config import IngestSettings, Settings
from quantivista.errors import ConfigurationError, InvalidInputError, NotFoundError
from quantivista.model.jobs import IngestionJob, JobStatus, JobTask, TaskStatus
from quantivista.platform import Platform
from quantivista.providers.registry import ProviderRegistry
from quantivista.providers.synthetic import SyntheticProvider
from quantivista.testing.fake_providers import SlowSyntheticProvider

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def _registry() -> ProviderRegistry:
    registry = ProviderRegistry(load_entry_points=False)
    registry.register(SyntheticProvider)
    registry.register(SlowSyntheticProvider)
    return registry


def _settings(root: Path, **ingest: object) -> Settings:
    return Settings(
        data_dir=root,
        simulator={"seed": 3, "universe_size": 12},
        ingest=IngestSettings(**{"symbols_per_batch": 2, **ingest}),  # type: ignore[arg-type]
    )


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    clock = TestClock(NOW)
    p = Platform.from_settings(_settings(tmp_path / "qv"), clock=clock, registry=_registry())
    yield p
    p.close()


def _symbols(p: Platform, n: int) -> list[str]:
    provider = p.provider("synthetic")
    assert isinstance(provider, SyntheticProvider)
    return sorted(provider.symbols())[:n]


def test_a_job_is_split_into_tasks_whose_counts_add_up(platform: Platform) -> None:
    syms = _symbols(platform, 5)
    job = platform.ingest(syms, "2024-01-01", "2024-03-31")
    tasks = platform.runtime.ingestion.tasks(job.job_id)
    assert job.tasks == 3 and [t.symbols for t in tasks] == [syms[:2], syms[2:4], syms[4:]]
    assert all(t.status is TaskStatus.SUCCEEDED and t.attempts == 1 for t in tasks)
    assert job.status is JobStatus.SUCCEEDED
    assert job.records_processed == sum(t.records_processed for t in tasks)
    stored = platform.bars(syms, "2024-01-01", "2024-03-31")
    assert stored.height == job.records_processed
    assert (stored["job_id"] == job.job_id).all()


def test_submit_records_a_pending_job_and_refuses_bad_requests(platform: Platform) -> None:
    service = platform.runtime.ingestion
    job = service.submit(_symbols(platform, 3), "2024-01-01", "2024-01-31")
    assert service.job(job.job_id).status is JobStatus.PENDING
    assert [t.status for t in service.tasks(job.job_id)] == [TaskStatus.PENDING] * 2
    with pytest.raises(InvalidInputError, match="end is before start"):
        service.submit(["AAA"], "2024-06-01", "2024-01-01")
    with pytest.raises(NotFoundError, match="unknown provider"):
        service.submit(["AAA"], "2024-01-01", "2024-01-31", providers=["nope"])
    done = service.run(job.job_id)
    assert done.status is JobStatus.SUCCEEDED


def test_a_lapsed_lease_fails_the_job_and_recovery_finishes_it(platform: Platform) -> None:
    clock = platform.clock
    assert isinstance(clock, TestClock)
    service = platform.runtime.ingestion
    catalog = platform.runtime.backend.catalog
    syms = _symbols(platform, 4)
    job = service.submit(syms, "2024-01-01", "2024-02-29")
    # a worker claims the first task, then dies without a word
    claimed = catalog.claim_task("dead-worker", 60.0, clock.now(), job.job_id)
    assert claimed is not None and claimed.seq == 0
    clock.advance(30)
    assert service.jobs()[0].status is JobStatus.PENDING  # the lease still holds
    clock.advance(31)
    listed = service.jobs()[0]
    assert listed.status is JobStatus.FAILED
    assert [d["kind"] for d in listed.error_details] == ["lease_expired"]
    assert listed.error_details[0]["worker"] == "dead-worker"
    assert not catalog.heartbeat(claimed.task_id, "dead-worker", 60.0, clock.now())
    assert [j.job_id for j in service.recoverable()] == [job.job_id]
    (recovered,) = service.recover()
    assert recovered.status is JobStatus.SUCCEEDED
    assert [d["kind"] for d in recovered.error_details] == ["lease_expired", "recovered"]
    tasks = service.tasks(job.job_id)
    assert [t.attempts for t in tasks] == [2, 1]  # the dead worker's claim counts
    stored = platform.bars(syms, "2024-01-01", "2024-02-29")
    assert stored.height == recovered.records_processed
    assert not service.recoverable()
    with pytest.raises(InvalidInputError, match="only a failed job"):
        service.recover(job.job_id)


def test_a_finished_task_is_refused_from_a_worker_that_lost_its_lease(platform: Platform) -> None:
    clock = platform.clock
    assert isinstance(clock, TestClock)
    catalog = platform.runtime.backend.catalog
    job = platform.runtime.ingestion.submit(_symbols(platform, 1), "2024-01-01", "2024-01-31")
    first = catalog.claim_task("a", 5.0, clock.now())
    assert first is not None
    clock.advance(10)
    catalog.expire_leases(clock.now())
    catalog.reset_tasks(job.job_id, [TaskStatus.FAILED])
    job_now = catalog.job(job.job_id)
    job_now.status = JobStatus.RUNNING
    catalog.save_job(job_now)
    second = catalog.claim_task("b", 5.0, clock.now())
    assert second is not None and second.task_id == first.task_id and second.attempts == 2
    done = first.model_copy(update={"status": TaskStatus.SUCCEEDED})
    assert not catalog.finish_task(done, "a", clock.now())  # "b" holds it now
    assert catalog.finish_task(second.model_copy(update={"status": TaskStatus.SUCCEEDED}), "b",
                               clock.now())  # fmt: skip


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from quantivista.config import IngestSettings, Settings
    from quantivista.platform import Platform
    from quantivista.providers.registry import ProviderRegistry
    from quantivista.providers.synthetic import SyntheticProvider
    from quantivista.testing.fake_providers import SlowSyntheticProvider

    registry = ProviderRegistry(load_entry_points=False)
    registry.register(SyntheticProvider)
    registry.register(SlowSyntheticProvider)
    settings = Settings(
        data_dir=Path(sys.argv[1]),
        simulator={"seed": 3, "universe_size": 12},
        ingest=IngestSettings(symbols_per_batch=1, fetch_concurrency=1, lease_s=2.0,
                              heartbeat_s=0.3),
    )
    with Platform.from_settings(settings, registry=registry) as p:
        p.ingest(sys.argv[2].split(","), "2023-01-01", "2024-12-31", providers=["slow"])
    """
)


def test_kill_9_mid_job_then_the_lease_lapses_and_recovery_completes(tmp_path: Path) -> None:
    root = tmp_path / "qv"
    settings = _settings(root, symbols_per_batch=1, lease_s=2.0, heartbeat_s=0.3)
    with Platform.from_settings(settings, registry=_registry()) as p:
        syms = _symbols(p, 8)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), ",".join(syms)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        with Platform.from_settings(settings, registry=_registry()) as p:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # wait until the child is mid-job
                jobs = p.jobs()
                tasks = p.runtime.ingestion.tasks(jobs[0].job_id) if jobs else []
                done = [t for t in tasks if t.status is TaskStatus.SUCCEEDED]
                if len(done) >= 2 and any(t.status is TaskStatus.RUNNING for t in tasks):
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the child never got mid-job")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    time.sleep(2.5)  # the dead child's lease lapses
    runner = CliRunner()
    listed = runner.invoke(app, ["--data-dir", str(root), "jobs"])
    assert listed.exit_code == 0, listed.output
    assert "failed" in listed.output
    with Platform.from_settings(settings, registry=_registry()) as p:
        (job,) = p.jobs()
        assert job.status is JobStatus.FAILED
        assert any(d["kind"] == "lease_expired" for d in job.error_details)
        unfinished = [t for t in p.runtime.ingestion.tasks(job.job_id)
                      if t.status is not TaskStatus.SUCCEEDED]  # fmt: skip
        assert unfinished and all(t.status is TaskStatus.PENDING for t in unfinished)
        (recovered,) = p.runtime.ingestion.recover()
        assert recovered.status is JobStatus.SUCCEEDED
        stored = p.bars(syms, "2023-01-01", "2024-12-31")
        # every bar once, and the job's counts are what the store holds for it
        assert stored.select(pl.struct("symbol", "ts").is_unique().all()).item()
        assert stored.height == recovered.records_processed
        assert (stored["job_id"] == recovered.job_id).all()
        want = pl.concat(
            [p.provider("synthetic").market.daily(s, "2023-01-01", "2024-12-31") for s in syms]  # type: ignore[attr-defined]
        )
        assert stored.height == want.height
        assert recovered.records_processed == sum(
            t.records_processed for t in p.runtime.ingestion.tasks(recovered.job_id)
        )
        assert recovered.end_time is not None and recovered.start_time is not None
        assert recovered.end_time > recovered.start_time


def test_a_queued_task_without_a_handler_fails_at_once_with_the_reason(
    platform: Platform,
) -> None:
    service = platform.runtime.ingestion
    service.handlers["export_x"] = lambda job, task: task  # registered when submitted...
    job = service.submit_kind("export_x", ["AAA"], {}, queued=True)
    del service.handlers["export_x"]  # ...gone in the process that runs it
    assert job.max_attempts > 1
    assert service.run_next("w", job.queue or "") is not None
    (task,) = service.tasks(job.job_id)
    assert task.status is TaskStatus.FAILED and task.attempts == 1  # not retried
    assert task.error_details[-1]["kind"] == "ConfigurationError"
    assert "failed for good" in task.error_details[-1]["message"]
    assert "no service runs jobs of kind 'export_x'" in task.error_details[-1]["message"]
    assert service.run_next("w", job.queue or "") is None  # nothing left to claim


def test_an_ingest_task_without_a_router_is_a_typed_error_not_an_assert(
    platform: Platform,
) -> None:
    service = platform.runtime.ingestion
    job = service.submit(_symbols(platform, 1), "2024-01-01", "2024-01-31")
    (task,) = service.tasks(job.job_id)
    with pytest.raises(ConfigurationError, match="no providers' router"):
        service._dispatch(job, task, None, lambda _symbol: None)


def test_a_local_failure_after_the_lease_was_lost_leaves_the_task_to_its_new_holder(
    platform: Platform,
) -> None:
    clock = platform.clock
    assert isinstance(clock, TestClock)
    service = platform.runtime.ingestion
    catalog = platform.runtime.backend.catalog
    lease = service.settings.lease_s

    def stalls_then_fails(job: IngestionJob, task: JobTask) -> JobTask:
        clock.advance(lease + 1)  # this process stalled past its lease...
        catalog.expire_leases(clock.now())
        catalog.reset_tasks(job.job_id, [TaskStatus.FAILED])
        running = catalog.job(job.job_id)
        running.status = JobStatus.RUNNING  # ...the job was recovered...
        catalog.save_job(running)
        stolen.append(catalog.claim_task("other", lease, clock.now(), job.job_id))
        raise RuntimeError("a bug after the stall")  # ...and another process runs the task

    stolen: list[JobTask | None] = []

    service.handlers["stall"] = stalls_then_fails
    job = service.submit_kind("stall", ["AAA"], {})
    service.run(job.job_id)  # the failure is not ours to record: no raise
    assert stolen and stolen[0] is not None
    (task,) = service.tasks(job.job_id)
    assert task.status is TaskStatus.RUNNING and task.worker == "other"
    kinds = [d["kind"] for d in service.job(job.job_id).error_details]
    assert "RuntimeError" not in kinds
