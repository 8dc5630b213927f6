"""Workers on the job catalog's queue: run, retry, drain, and `qv worker` over real sockets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

from procs import reap
from quantivista.cli import app
from quantivista.config import IngestSettings, Settings, WorkerSettings
from quantivista.model.jobs import JobStatus, TaskStatus
from quantivista.providers.base import BarRequest, FetchResult
from quantivista.providers.registry import ProviderRegistry
from quantivista.providers.synthetic import SyntheticProvider
from quantivista.runtime import Runtime
from quantivista.services.queries import BarQuery
from quantivista.services.workers import WorkerService
from quantivista.testing.fake_providers import SlowSyntheticProvider


class BrokenProvider(SyntheticProvider):
    """Fails with a bug (not a provider error): the task itself fails."""

    name = "broken"

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        raise RuntimeError("a bug in the parser")


def _registry() -> ProviderRegistry:
    registry = ProviderRegistry(load_entry_points=False)
    for cls in (SyntheticProvider, SlowSyntheticProvider, BrokenProvider):
        registry.register(cls)
    return registry


def _settings(root: Path, **workers: object) -> Settings:
    return Settings(
        data_dir=root,
        simulator={"seed": 3, "universe_size": 12},
        ingest=IngestSettings(symbols_per_batch=2, fetch_concurrency=1, heartbeat_s=0.2),
        workers=WorkerSettings(**{"poll_s": 0.05, "reap_s": 0.2, **workers}),  # type: ignore[arg-type]
    )


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime.from_settings(_settings(tmp_path / "qv"), registry=_registry())
    yield runtime
    runtime.close()


def _symbols(rt: Runtime, n: int) -> list[str]:
    provider = rt.acquisition.provider("synthetic")
    assert isinstance(provider, SyntheticProvider)
    return sorted(provider.symbols())[:n]


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def _start(worker: WorkerService) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while worker.probes._server is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return thread


def test_a_worker_runs_a_queued_job_and_reports_it(rt: Runtime) -> None:
    syms = _symbols(rt, 8)
    job = rt.ingestion.enqueue(syms, "2024-01-01", "2024-03-31")
    assert (job.queue, job.max_attempts, job.tasks) == ("default", 3, 4)
    assert rt.ingestion.job(job.job_id).status is JobStatus.PENDING  # nothing ran it yet
    worker = rt.worker(concurrency=2, probe_port=0)
    thread = _start(worker)
    try:
        assert httpx.get(f"{worker.probes.url}/readyz").status_code == 200
        done = rt.ingestion.wait(job.job_id, timeout_s=30, poll_s=0.05)
        assert done.status is JobStatus.SUCCEEDED
        assert rt.ingestion.progress(job.job_id) == (4, 4)
        stored = rt.queries.bars(BarQuery.of(syms, "2024-01-01", "2024-03-31"))
        assert stored.height == done.records_processed > 0
        text = httpx.get(f"{worker.probes.url}/metrics").text
        assert _metric(text, 'qv_worker_tasks_total{event="claimed"}') == 4
        assert _metric(text, 'qv_worker_tasks_total{event="succeeded"}') == 4
        assert _metric(text, "qv_worker_tasks_in_flight") == 0
        assert all(t.worker == worker.name for t in rt.ingestion.tasks(job.job_id))
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{worker.probes._port}/healthz", timeout=1)


def test_a_failing_task_is_retried_then_fails_with_the_reason(rt: Runtime) -> None:
    job = rt.ingestion.enqueue(_symbols(rt, 2), "2024-01-01", "2024-01-31", providers=["broken"])
    worker = rt.worker(concurrency=1, probe_port=0)
    thread = _start(worker)
    try:
        done = rt.ingestion.wait(job.job_id, timeout_s=30, poll_s=0.05)
        text = httpx.get(f"{worker.probes.url}/metrics").text
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert done.status is JobStatus.FAILED
    (task,) = rt.ingestion.tasks(job.job_id)
    assert task.status is TaskStatus.FAILED and task.attempts == 3
    assert [d["kind"] for d in task.error_details] == ["RuntimeError"] * 3
    assert "gave up after 3 attempts: a bug in the parser" in task.error_details[-1]["message"]
    assert _metric(text, 'qv_worker_tasks_total{event="released"}') == 2
    assert _metric(text, 'qv_worker_tasks_total{event="failed"}') == 1


def test_stopping_releases_running_tasks_for_other_workers(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "qv", drain_s=0.0)
    with Runtime.from_settings(settings, registry=_registry()) as rt:
        syms = _symbols(rt, 8)
        job = rt.ingestion.enqueue(syms, "2024-01-01", "2024-01-31", providers=["slow"])
        worker = rt.worker(concurrency=2, probe_port=0)
        thread = _start(worker)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            running = [t for t in rt.ingestion.tasks(job.job_id) if t.status is TaskStatus.RUNNING]
            if len(running) == 2:
                break
            time.sleep(0.01)
        worker.stop()
        thread.join(timeout=10)
        tasks = rt.ingestion.tasks(job.job_id)
        released = [t for t in tasks if t.status is TaskStatus.PENDING and t.worker]
        assert released, "the running tasks were not released"
        assert all(t.attempts == 0 for t in released)  # a release is not an attempt
    with Runtime.from_settings(settings, registry=_registry()) as rt:
        other = rt.worker(concurrency=2, probe_port=0)
        thread = _start(other)
        try:
            done = rt.ingestion.wait(job.job_id, timeout_s=30, poll_s=0.05)
        finally:
            other.stop()
            thread.join(timeout=10)
        assert done.status is JobStatus.SUCCEEDED
        stored = rt.queries.bars(BarQuery.of(syms, "2024-01-01", "2024-01-31"))
        assert stored.select(pl.struct("symbol", "ts").is_unique().all()).item()
        assert stored.height == done.records_processed


def test_qv_worker_serves_until_sigterm_and_qv_ingest_submit_waits(tmp_path: Path) -> None:
    root = tmp_path / "qv"
    env = {
        **os.environ,
        "QV_DATA_DIR": str(root),
        "QV_SIMULATOR__UNIVERSE_SIZE": "12",
        "QV_WORKERS__POLL_S": "0.05",
        "QV_INGEST__SYMBOLS_PER_BATCH": "3",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantivista.cli", "worker", "--concurrency", "2",
         "--probe-port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"probes on (\S+)", line)
        assert match, line
        url = match.group(1)
        assert httpx.get(f"{url}/healthz").json()["service"] == "worker"
        runner = CliRunner()
        with Runtime.from_settings(Settings(data_dir=root, simulator={"universe_size": 12})) as rt:
            syms = _symbols(rt, 6)
        result = runner.invoke(
            app,
            ["--data-dir", str(root), "ingest", *syms, "--start", "2024-01-01",
             "--end", "2024-02-29", "--submit", "--wait"],
            env={"QV_INGEST__SYMBOLS_PER_BATCH": "3"},
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "queued" in result.output and "succeeded" in result.output
        listed = runner.invoke(app, ["--data-dir", str(root), "jobs", "--format", "json"])
        (row,) = json.loads(listed.output)
        assert (row["tasks_done"], row["tasks"], row["queue"]) == (2, 2, "default")
        assert row["status"] == "succeeded"
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, 'qv_worker_tasks_total{event="succeeded"}') == 2
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        reap(proc)  # kills it if still running, closes its pipe
    assert proc.returncode == 0, out
    assert "stopped" in out
