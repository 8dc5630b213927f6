"""REAL_TIME_STREAM: records published on the bus are in the lake within a second (p99),
at 10,000 records a second; records for unknown sources become dead letters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantivista.bus.events import DataIngestedEvent, Event, WorkflowRecords
from quantivista.config import Settings
from quantivista.model.workflow import DataSource, JobStatus, QualityCheck
from quantivista.runtime import Runtime
from quantivista.services.workflow_stream import WorkflowStream
from timing import contention

RATE = 10_000  # records a second
SECONDS = 3
PER_EVENT = 100


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with Runtime(Settings(data_dir=tmp_path / "data")) as rt:
        rt.workflows.register_source("acme", DataSource(
            source_id="fills", source_type="TRADE_EXECUTION", ingestion_mode="REAL_TIME_STREAM",
            data_format="JSON", target_table="execution_data_lake",
            quality_checks=[QualityCheck(check_id="qty", check_type="range", field="qty",
                                         params={"min": 1})]))  # fmt: skip
        yield rt


@pytest.mark.slow
def test_published_records_reach_the_lake_within_a_second_at_10k_per_second(
    runtime: Runtime,
) -> None:
    finished: dict[str, int] = {}

    def done(event: Event) -> None:
        assert isinstance(event, DataIngestedEvent)
        finished[event.data_ingested.job_id] = time.perf_counter_ns()

    runtime.bus.subscribe("data.ingested", done)
    stream = WorkflowStream(runtime.workflows, runtime.bus, flush_s=0.1)
    slowdown = contention()
    stream.start()
    today = datetime.now(UTC).date().isoformat()
    sent = 0
    start = time.perf_counter()
    for tick in range(RATE * SECONDS // PER_EVENT):  # paced: one event every 10 ms
        delay = start + tick * PER_EVENT / RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        now = time.perf_counter_ns()
        records = [
            {"trade_id": f"T{sent + i}", "execution_date": today, "qty": 0 if (sent + i) % 997 == 0
             else 5, "published_ns": now} for i in range(PER_EVENT)
        ]  # fmt: skip
        event = WorkflowRecords(
            occurred_at=datetime.now(UTC),
            tenant_id="acme",
            source_id="fills",
            records=records,
            offset=sent,
        )
        runtime.bus.publish(event)
        sent += PER_EVENT
    stream.stop()
    lake = runtime.workflows.lake_rows("acme", "execution_data_lake")
    rejected = sum(1 for i in range(sent) if i % 997 == 0)
    assert lake.height == sent - rejected
    assert sum(j.records_failed for j in stream.jobs) == rejected
    assert all(j.status in (JobStatus.SUCCEEDED, JobStatus.PARTIAL) for j in stream.jobs)
    done_ns = lake["ingestion_job_id"].replace_strict(finished, return_dtype=pl.Int64)
    published = lake["execution_data"].struct.field("published_ns")
    latency_s = ((done_ns - published) / 1e9).to_numpy()
    p99 = float(np.percentile(latency_s, 99))
    # the 1 s target is for a machine of our own (perf/workflow_stream.py measures it): on a
    # shared one the budget grows with the CPU contention measured around the run
    budget = 1.0 * max(slowdown, contention())
    assert p99 < budget, f"p99 {p99:.3f}s over {len(stream.jobs)} micro-batches ({budget=:.1f}s)"
    offsets = sorted(lake["input_offset"].to_list())
    assert offsets[0] == 1 and offsets[-1] == sent - 1  # record 0 had qty 0


def test_records_for_an_unknown_source_are_kept_as_dead_letters(runtime: Runtime) -> None:
    stream = WorkflowStream(runtime.workflows, runtime.bus, flush_s=10)
    stream.start()
    event = WorkflowRecords(
        occurred_at=datetime.now(UTC), tenant_id="globex", source_id="fills",
        records=[{"trade_id": "X"}],
    )  # fmt: skip
    runtime.bus.publish(event)
    stream.stop()
    assert stream.jobs == []
    held = runtime.backend.catalog.dead_letters()
    assert [(d["topic"], d["handler"]) for d in held] == [("workflow.records", "workflow-stream")]
    assert "unknown source" in held[0]["error"]
