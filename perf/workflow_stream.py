"""REAL_TIME_STREAM: records published on the in-process bus -> visible in the lake.

Publishes 10,000 records a second (an event of 100 records every 10 ms) for 10 seconds
to a stream source, micro-batched every 100 ms, and prints one JSON line: latency
percentiles from publish to the end of the job that wrote the record (its lake file is
renamed into place before the job ends). Target: p99 < 1 s.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from quantivista.bus.events import DataIngestedEvent, Event, WorkflowRecords
from quantivista.config import Settings
from quantivista.model.workflow import DataSource
from quantivista.runtime import Runtime
from quantivista.services.workflow_stream import WorkflowStream

RATE, SECONDS, PER_EVENT = 10_000, 10, 100


def main() -> None:
    finished: dict[str, int] = {}

    def done(event: Event) -> None:
        assert isinstance(event, DataIngestedEvent)
        finished[event.data_ingested.job_id] = time.perf_counter_ns()

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, Runtime(Settings(data_dir=Path(tmp))) as rt:
        rt.workflows.register_source("perf", DataSource(
            source_id="fills", source_type="TRADE_EXECUTION", ingestion_mode="REAL_TIME_STREAM",
            data_format="JSON", target_table="execution_data_lake"))  # fmt: skip
        rt.bus.subscribe("data.ingested", done)
        stream = WorkflowStream(rt.workflows, rt.bus, flush_s=0.1)
        stream.start()
        today = datetime.now(UTC).date().isoformat()
        start = time.perf_counter()
        for tick in range(RATE * SECONDS // PER_EVENT):
            delay = start + tick * PER_EVENT / RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            now = time.perf_counter_ns()
            records = [{"trade_id": f"T{tick}-{i}", "execution_date": today, "qty": i,
                        "published_ns": now} for i in range(PER_EVENT)]  # fmt: skip
            rt.bus.publish(WorkflowRecords(occurred_at=datetime.now(UTC), tenant_id="perf",
                                           source_id="fills", records=records,
                                           offset=tick * PER_EVENT))  # fmt: skip
        stream.stop()
        lake = rt.workflows.lake_rows("perf", "execution_data_lake")
        done_ns = lake["ingestion_job_id"].replace_strict(finished, return_dtype=pl.Int64)
        published = lake["execution_data"].struct.field("published_ns")
        latency = ((done_ns - published) / 1e9).to_numpy()
    print(json.dumps({
        "records": int(lake.height), "rate_per_s": RATE, "jobs": len(stream.jobs),
        "p50_s": round(float(np.percentile(latency, 50)), 3),
        "p99_s": round(float(np.percentile(latency, 99)), 3),
        "max_s": round(float(latency.max()), 3), "load1": load,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
