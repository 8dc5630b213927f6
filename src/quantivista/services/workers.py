"""`qv worker`: run queued ingestion tasks from the job catalog, with probes and metrics.

Any number of workers on any number of hosts share one job catalog (PostgreSQL claims with
`FOR UPDATE SKIP LOCKED`, the embedded SQLite catalog with its write lock). With a NATS
task queue (`--queue nats://host:4222/NAME`, or `workers.queue_url`) the next task comes
from a JetStream work-queue stream instead (see `bus.task_queue`); the catalog still
leases it, so progress, attempts and counts are the same. Each worker
runs `concurrency` tasks at once under leases it renews by heartbeats, and returns lapsed
leases of dead workers to the queue. On stop (SIGTERM) it claims nothing more, gives its
running tasks `drain_s` to finish, then releases the leases of those still running so
that other workers take them at once instead of after the lease time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge

from quantivista.config import ProbeSettings, WorkerSettings
from quantivista.model.jobs import JobTask, TaskStatus
from quantivista.ops.probes import ProbeServer
from quantivista.services.ingestion import IngestionService, worker_id

if TYPE_CHECKING:
    from quantivista.bus.task_queue import Delivery, NatsTaskQueue

__all__ = ["WorkerMetrics", "WorkerService", "split_queue_url"]

log = logging.getLogger(__name__)


def split_queue_url(value: str) -> tuple[str | None, str | None]:
    """Split `--queue`: `nats://host:port/NAME?prefix=p` -> (url without NAME, NAME).

    A plain name is the catalog queue of that name: (None, value).
    """
    if not value.startswith("nats://"):
        return None, value
    parts = urlsplit(value)
    name = parts.path.strip("/") or None
    query = f"?{parts.query}" if parts.query else ""
    return f"nats://{parts.netloc}{query}", name


class WorkerMetrics:
    """The `qv_worker_*` series of one worker process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tasks = Counter(
            "qv_worker_tasks",
            "tasks by what happened to them (claimed, succeeded, failed, released)",
            ["event"],
            registry=self.registry,
        )
        self.renewals = Counter(
            "qv_worker_lease_renewals", "lease renewals (heartbeats)", registry=self.registry
        )
        self.reaped = Counter(
            "qv_worker_reaped_jobs",
            "jobs whose lapsed leases this worker returned to the queue",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "qv_worker_tasks_in_flight", "tasks running now", registry=self.registry
        )
        for event in ("claimed", "succeeded", "failed", "released"):
            self.tasks.labels(event)

    def event(self, name: str) -> None:
        """Count one `IngestionService` task event."""
        if name == "renewed":
            self.renewals.inc()
        elif name == "reaped":
            self.reaped.inc()
        else:
            self.tasks.labels(name).inc()


@dataclass
class _Slot:
    thread: threading.Thread | None = None
    task: JobTask | None = None
    delivery: Delivery | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class WorkerService:
    """One worker process: slots that claim and run tasks, a reaper, and the probes."""

    def __init__(
        self,
        ingestion: IngestionService,
        settings: WorkerSettings,
        probes: ProbeSettings,
        *,
        metrics: WorkerMetrics,
        tasks: NatsTaskQueue | None = None,
        queue: str | None = None,
        concurrency: int | None = None,
        probe_port: int | None = None,
        warm_up: Callable[[], None] | None = None,
    ) -> None:
        self.ingestion = ingestion
        self.settings = settings
        self.tasks = tasks
        self.metrics = metrics
        self.queue = queue or settings.queue
        self.concurrency = concurrency or settings.concurrency
        self.name = worker_id()
        self.probes = ProbeServer("worker", probes, registries=[metrics.registry], port=probe_port)
        self.probes.add_check("catalog", self._catalog_ready)
        self._stop = threading.Event()
        self._slots = [_Slot() for _ in range(self.concurrency)]
        self._reaper: threading.Thread | None = None
        self._warm_up = warm_up

    def _catalog_ready(self) -> bool | str:
        self.ingestion.catalog.get_state("worker.ready")  # one round trip to the catalog
        return True

    def stop(self) -> None:
        """Ask the worker to stop (what SIGTERM does): no new claims, then drain."""
        self._stop.set()

    def run(self) -> None:
        """Serve until `stop()`, then drain and release; return when done."""
        self.start()
        self.wait()

    def start(self) -> WorkerService:
        """Warm up (calendar, validator, clients), start the probes, slots and reaper."""
        if self._warm_up is not None:
            self._warm_up()
        self.probes.start()
        log.info("worker %s serves queue %r with %d slots", self.name, self.queue,
                 self.concurrency)  # fmt: skip
        for number, slot in enumerate(self._slots):
            slot.thread = threading.Thread(
                target=self._serve, args=(slot,), name=f"qv-worker-{number}", daemon=True
            )
            slot.thread.start()
        self._reaper = threading.Thread(target=self._reap, name="qv-worker-reaper", daemon=True)
        self._reaper.start()
        return self

    def wait(self) -> None:
        """Block until `stop()`, then drain, release and stop the probes."""
        try:
            while not self._stop.wait(0.5):  # short waits: signal handlers run between them
                pass
        finally:
            self._stop.set()
            self.probes.draining()
            self._drain()
            if self._reaper is not None:
                self._reaper.join(timeout=5)
            if self.ingestion.after_run is not None:  # the statistics since the last save
                self.ingestion.after_run()
            self.probes.stop()

    def _serve(self, slot: _Slot) -> None:
        while not self._stop.is_set():
            try:
                if self.tasks is not None:
                    self._serve_delivery(slot)
                    continue
                with slot.lock:
                    if self._stop.is_set():
                        return
                    task = self.ingestion.claim_next(self.name, self.queue)
                    slot.task = task
                if task is None:
                    self._stop.wait(self.settings.poll_s)
                    continue
                self._execute(slot, task)
            except Exception:  # a catalog outage or a bug: log it, keep serving
                log.exception("worker slot failed; going on")
                self._stop.wait(self.settings.poll_s)

    def _execute(self, slot: _Slot, task: JobTask, delivery: Delivery | None = None) -> None:
        self.metrics.in_flight.inc()
        status = None
        try:
            status = self.ingestion.execute(
                task, self.name, touch=delivery.touch if delivery else None
            )
        finally:
            self.metrics.in_flight.dec()
            with slot.lock:
                slot.task = slot.delivery = None
        if delivery is None or status is None:
            # lease lost (released on stop, or reaped), or an error: the delivery lapses and
            # comes back to whoever may run it; acking it could drop another worker's task
            return
        if status is TaskStatus.PENDING:  # failed, attempts left: deliver it again
            delivery.retry()
        else:  # succeeded, or failed for good
            delivery.ack()

    def _serve_delivery(self, slot: _Slot) -> None:
        """Take the next task id from the task queue, lease it in the catalog, run it."""
        assert self.tasks is not None
        delivery = self.tasks.next(timeout_s=max(self.settings.poll_s, 0.2))
        if delivery is None:
            return
        with slot.lock:
            task = None if self._stop.is_set() else self.ingestion.claim_task(
                delivery.task_id, self.name)  # fmt: skip
            slot.task, slot.delivery = task, delivery
        if task is not None:
            self._execute(slot, task, delivery)
            return
        with slot.lock:
            slot.delivery = None
        if self._stop.is_set():
            delivery.retry()  # unrun: to another worker at once
        elif self.ingestion.task_open(delivery.task_id):
            # running elsewhere under a live lease (a redelivery that came too soon)
            delivery.retry(delay_s=self.ingestion.settings.heartbeat_s)
        else:
            delivery.ack()  # finished already, or its job is gone

    def _reap(self) -> None:
        while not self._stop.wait(self.settings.reap_s):
            try:
                self.ingestion.expire_leases()
            except Exception:
                log.exception("reaping lapsed leases failed; next round")

    def _drain(self) -> None:
        """Let running tasks finish for `drain_s`; release the leases of those that don't."""
        deadline = time.monotonic() + self.settings.drain_s
        for slot in self._slots:
            if slot.thread is not None:
                slot.thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        for slot in self._slots:
            with slot.lock:
                task, delivery = slot.task, slot.delivery
            if task is not None and self.ingestion.release(task, self.name):
                log.warning("released %s unfinished: another worker runs it", task.task_id)
                if delivery is not None:
                    delivery.retry()
