"""REAL_TIME_STREAM sources: records from the bus, micro-batched into the lake.

    stream = WorkflowStream(runtime.workflows, runtime.bus, flush_s=0.2)
    stream.start()        # subscribes to `workflow.records`; a thread flushes every flush_s
    ...
    stream.stop()         # flushes what is buffered, then returns

Each flush runs one job per (tenant, source) with the buffered records, through the same
rules, checks, dead letters and lineage as a file (the input is `bus:workflow.records`,
its offsets the producer's sequence numbers). Records for a source that does not exist or
is not a stream raise in the handler: the bus keeps them as a dead letter.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import polars as pl

from quantivista.bus.base import EventBus
from quantivista.bus.events import Event, WorkflowRecords
from quantivista.errors import InvalidInputError
from quantivista.model.workflow import IngestionJob, IngestionMode
from quantivista.reporting.connectors import Batch
from quantivista.services.workflow_ingestion import WorkflowIngestionService

__all__ = ["WorkflowStream"]

_TOPIC = WorkflowRecords.topic


class WorkflowStream:
    """Consumes `workflow.records` events into REAL_TIME_STREAM sources' lake tables."""

    def __init__(
        self,
        service: WorkflowIngestionService,
        bus: EventBus,
        *,
        flush_s: float = 0.2,
        max_records: int = 100_000,
    ) -> None:
        self.service = service
        self.bus = bus
        self.flush_s = flush_s
        self.max_records = max_records
        self.jobs: list[IngestionJob] = []
        self._lock = threading.Lock()
        self._buffer: dict[tuple[str, str], list[WorkflowRecords]] = defaultdict(list)
        self._buffered = 0
        self._known: set[tuple[str, str]] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscription: str | None = None

    def start(self) -> None:
        """Subscribe and start flushing."""
        self._subscription = self.bus.subscribe(_TOPIC, self._on_event, name="workflow-stream")
        self._thread = threading.Thread(target=self._loop, name="qv-workflow-stream", daemon=True)
        self._thread.start()

    def _on_event(self, event: Event) -> None:
        assert isinstance(event, WorkflowRecords)
        key = (event.tenant_id, event.source_id)
        if key not in self._known:  # one catalog read per source, not per event
            source = self.service.source(*key)
            if source.ingestion_mode is not IngestionMode.REAL_TIME_STREAM or not source.enabled:
                raise InvalidInputError(
                    "records for a source that is not an enabled REAL_TIME_STREAM",
                    source_id=event.source_id,
                )
            self._known.add(key)
        with self._lock:
            self._buffer[key].append(event)
            self._buffered += len(event.records)
            full = self._buffered >= self.max_records
        if full:
            self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> list[IngestionJob]:
        """Run one job per source with the records buffered so far; return the jobs."""
        with self._lock:
            taken, self._buffer = self._buffer, defaultdict(list)
            self._buffered = 0
        done = []
        for (tenant, source_id), events in taken.items():
            records: list[dict[str, Any]] = [r for e in events for r in e.records]
            frame = pl.from_dicts(records, infer_schema_length=None)
            first, last = events[0].offset, events[-1].offset + len(events[-1].records)
            batch = Batch(
                frame,
                f"bus:{_TOPIC}",
                offset_start=first,
                cursor={"topic": _TOPIC, "offset_start": first, "offset_end": last},
            )
            job = self.service.new_job(tenant, source_id)
            done.append(self.service.run_job(tenant, job.job_id, given=batch))
        self.jobs += done
        return done

    def stop(self) -> None:
        """Stop consuming; flush what is buffered."""
        if self._subscription is not None:
            self.bus.unsubscribe(self._subscription)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
