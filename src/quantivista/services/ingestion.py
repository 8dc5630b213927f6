"""Ingestion jobs: submitted as tasks, run under leases, recoverable after a crash.

A job is split into tasks (batches of symbols over the job's range). Whoever runs a job
(the submitting process, or a worker) claims one task at a time with a lease in the job
catalog and renews it by heartbeats while it fetches, validates and stores. A process that
dies stops heartbeating: once its lease lapses the task goes back to pending and the job
becomes `failed` (kind `lease_expired`), until `recover()` resumes its unfinished tasks.
Writes are idempotent, so a task that ran halfway runs again without duplicates, and the
job's counts are the sum of its tasks' last runs.

A job submitted with a `queue` is run by `qv worker`s instead (`run_next`): a lapsed lease
puts its task back on the queue for another worker, and a task that fails or lapses
`max_attempts` times fails with the reason.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from uuid import uuid4

from quantivista.acquisition.router import Router
from quantivista.acquisition.wiring import Acquisition
from quantivista.clock import Clock
from quantivista.config import IngestSettings, WorkerSettings
from quantivista.errors import (
    ConfigurationError,
    InvalidInputError,
    ProviderError,
    QuantiVistaError,
)
from quantivista.model.jobs import DataQualityReport, IngestionJob, JobStatus, JobTask, TaskStatus
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.ops.metrics import record_job, stage
from quantivista.ops.tracing import span
from quantivista.pipeline.messages import BatchId, RawBatch
from quantivista.pipeline.runner import InProcessRunner
from quantivista.pipeline.stages import Progress, acquire
from quantivista.providers.base import request_range
from quantivista.services.queries import symbol_list
from quantivista.services.writes import new_job_id
from quantivista.storage.contracts import JobCatalog
from quantivista.timeutil import DateLike

__all__ = ["IngestionService", "Progress", "TaskEvent", "TaskHandler", "worker_id"]

log = logging.getLogger(__name__)

_DONE = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)
_STATS_S = 2.0
_ENDED = (JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED)

TaskHandler = Callable[[IngestionJob, JobTask], JobTask]
"""Runs one claimed task of a job of another kind than ingest; returns it succeeded."""

TaskEvent = Callable[[str], None]
"""Told what happened to a task: claimed, succeeded, failed, released, renewed, reaped."""


def worker_id() -> str:
    """Return a name for this process as a task holder: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"


class _Heartbeat:
    """Renew a task's lease on a background thread until the block ends."""

    def __init__(
        self, beat: Callable[[], bool], every_s: float, events: TaskEvent | None = None
    ) -> None:
        self._beat = beat
        self._events = events
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qv-heartbeat", daemon=True)
        self.lost = False

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                if not self._beat():
                    self.lost = True
                    return
                if self._events is not None:
                    self._events("renewed")
            except QuantiVistaError as exc:  # a catalog hiccup: the next beat may pass
                log.warning("heartbeat failed: %s", exc)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()


class IngestionService:
    """Submit, run, follow and recover ingestion jobs."""

    def __init__(
        self,
        runner: InProcessRunner,
        acquisition: Acquisition,
        catalog: JobCatalog,
        clock: Clock,
        settings: IngestSettings,
        *,
        after_run: Callable[[], None] | None = None,
        events: TaskEvent | None = None,
        workers: WorkerSettings | None = None,
        publish: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self.runner = runner
        self.publish = publish  # queued task ids go to a task queue outside the catalog too
        self.acquisition = acquisition
        self.catalog = catalog
        self.clock = clock
        self.settings = settings
        self.after_run = after_run  # e.g. keep provider statistics for other processes
        self.events = events  # e.g. a worker's metrics
        self.workers = workers or WorkerSettings()
        # job kind -> what runs its tasks (services register theirs: exports, ...)
        self.handlers: dict[str, TaskHandler] = {}
        # a worker's view of the jobs it runs tasks of: the fields a task needs never change
        self._jobs: dict[str, tuple[IngestionJob, Router | None]] = {}
        self._stats_at = 0.0

    # -- submit ----------------------------------------------------------------------------
    def submit(
        self,
        symbols: str | Sequence[str],
        start: DateLike,
        end: DateLike,
        timeframe: TimeframeLike = "1d",
        providers: Sequence[str] | None = None,
        *,
        tenant: str | None = None,
        queue: str | None = None,
        max_attempts: int = 0,
        symbols_per_task: int | None = None,
    ) -> IngestionJob:
        """Record a pending job and its tasks; return it (nothing is fetched yet).

        With `queue`, workers of that queue run it (`qv worker`); else the caller does.
        """
        names = [n.lower() for n in providers] if providers else [self.settings.default_provider]
        for name in names:
            self.acquisition.registry.get(name)  # NotFoundError for an unknown provider
        wanted = symbol_list(symbols)
        lo, hi = request_range(start, end)
        if hi <= lo:
            raise InvalidInputError("end is before start", start=str(start), end=str(end))
        tf = Timeframe.parse(timeframe)
        now = self.clock.now()
        job_id = new_job_id(now)
        size = symbols_per_task or self.settings.symbols_per_batch
        chunks = [wanted[i : i + size] for i in range(0, len(wanted), size)]
        job = IngestionJob(
            job_id=job_id,
            source_id=",".join(names),
            status=JobStatus.PENDING,
            start_time=now,
            symbols=wanted,
            timeframe=str(tf),
            request_start=lo,
            request_end=hi,
            providers=names,
            tasks=len(chunks),
            tenant=tenant,
            queue=queue,
            max_attempts=max_attempts,
        )
        tasks = [
            JobTask(task_id=f"{job_id}/{i:04d}", job_id=job_id, seq=i, symbols=chunk)
            for i, chunk in enumerate(chunks)
        ]
        self.catalog.save_job(job)
        self.catalog.add_tasks(tasks)
        if queue is not None and self.publish is not None:
            self.publish(queue, [t.task_id for t in tasks])
        return job

    def enqueue(
        self,
        symbols: str | Sequence[str],
        start: DateLike,
        end: DateLike,
        timeframe: TimeframeLike = "1d",
        providers: Sequence[str] | None = None,
        *,
        queue: str | None = None,
        tenant: str | None = None,
        symbols_per_task: int | None = None,
    ) -> IngestionJob:
        """Submit a job for `qv worker`s (default queue and attempts from `workers`)."""
        return self.submit(
            symbols,
            start,
            end,
            timeframe,
            providers,
            tenant=tenant,
            queue=queue or self.workers.queue,
            max_attempts=self.workers.max_attempts,
            symbols_per_task=symbols_per_task,
        )

    def submit_kind(
        self,
        kind: str,
        symbols: Sequence[str],
        params: dict[str, object],
        *,
        tenant: str | None = None,
        queued: bool = False,
    ) -> IngestionJob:
        """Record a pending job of `kind` with one task (its handler runs it); return it.

        `queued`: for `qv worker`s of the default queue; else the caller runs it (`run`).
        """
        if kind not in self.handlers:
            raise ConfigurationError(f"no service runs jobs of kind {kind!r}")
        now = self.clock.now()
        job = IngestionJob(
            job_id=new_job_id(now),
            source_id=kind,
            kind=kind,
            params=params,
            start_time=now,
            symbols=list(symbols),
            tasks=1,
            tenant=tenant,
            queue=self.workers.queue if queued else None,
            max_attempts=self.workers.max_attempts if queued else 0,
        )
        self.catalog.save_job(job)
        self.catalog.add_tasks(
            [JobTask(task_id=f"{job.job_id}/0000", job_id=job.job_id, seq=0, symbols=job.symbols)]
        )
        return job

    def ingest(
        self,
        symbols: str | Sequence[str],
        start: DateLike,
        end: DateLike,
        timeframe: TimeframeLike = "1d",
        providers: Sequence[str] | None = None,
        *,
        progress: Progress | None = None,
    ) -> IngestionJob:
        """Submit a job and run it here; return the finished job."""
        job = self.submit(symbols, start, end, timeframe, providers)
        return self.run(job.job_id, progress=progress)

    # -- run -------------------------------------------------------------------------------
    def run(
        self, job_id: str, *, progress: Progress | None = None, worker: str | None = None
    ) -> IngestionJob:
        """Run the job's pending tasks in this process, one lease at a time; return the job.

        Tasks that other workers hold are left to them: the job is finished by whoever
        completes its last task.
        """
        self.expire_leases()
        job = self.catalog.job(job_id)
        if job.status is JobStatus.PENDING:
            job.status = JobStatus.RUNNING
            self.catalog.save_job(job)
        holder = worker or worker_id()
        tasks = self.catalog.tasks(job_id)
        done = sum(len(t.symbols) for t in tasks if t.status in _DONE)
        total = len(job.symbols)

        def tick(symbol: str) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(symbol, done, total)

        router = self._router(job)
        try:
            while True:
                task = self.catalog.claim_task(
                    holder, self.settings.lease_s, self.clock.now(), job_id
                )
                if task is None:
                    break
                self._run_task(job, task, holder, router, tick)
        finally:
            if self.after_run is not None:
                self.after_run()
        return self._finish(job_id)

    def _run_task(
        self,
        job: IngestionJob,
        task: JobTask,
        worker: str,
        router: Router | None,
        tick: Callable[[str], None],
        touch: Callable[[], None] | None = None,
    ) -> TaskStatus | None:
        """Run one leased task; return the status stored (None: the lease was lost)."""

        def beat() -> bool:
            if touch is not None:  # a task queue outside the catalog holds its delivery too
                try:
                    touch()
                except Exception as exc:  # a broker hiccup must not stop the lease's renewal
                    log.warning("task queue heartbeat failed: %s", exc)
            return self.catalog.heartbeat(
                task.task_id, worker, self.settings.lease_s, self.clock.now()
            )

        with (
            _Heartbeat(beat, self.settings.heartbeat_s, self.events),
            span(f"{job.kind}.batch", job_id=job.job_id, task_id=task.task_id,
                 symbols=len(task.symbols), timeframe=str(job.timeframe)),
        ):  # fmt: skip
            try:
                finished = self._dispatch(job, task, router, tick)
            except Exception as exc:  # recorded on the task and the job, then raised
                permanent = isinstance(exc, ConfigurationError)  # another attempt fails alike
                if job.queue is not None:  # a worker's task: retried, the job goes on
                    return self._task_failed(task, worker, exc, permanent=permanent)
                failed = task.model_copy(
                    update={
                        "status": TaskStatus.FAILED,
                        "error_details": [{"kind": type(exc).__name__, "message": str(exc)}],
                    }
                )
                if not self.catalog.finish_task(failed, worker, self.clock.now()):
                    # another process holds the task now and runs it again: the job is theirs
                    log.warning("lost the lease of %s while it failed (%s): another worker"
                                " runs it again", task.task_id, exc)  # fmt: skip
                    return None
                self._fail(job.job_id, exc)
                raise
        if not self.catalog.finish_task(finished, worker, self.clock.now()):
            log.warning("lost the lease of %s: another worker runs it again", task.task_id)
            return None
        if self.events is not None:
            self.events("succeeded")
        return TaskStatus.SUCCEEDED

    def _dispatch(
        self, job: IngestionJob, task: JobTask, router: Router | None, tick: Callable[[str], None]
    ) -> JobTask:
        """Run a task by its job's kind: ingest here, other kinds by their handler."""
        if job.kind == "ingest":
            if router is None:  # a bug in the caller, not a bad input: no retry helps
                raise ConfigurationError(f"ingest job {job.job_id} has no providers' router")
            return self._ingest_task(job, task, router, tick)
        handler = self.handlers.get(job.kind)
        if handler is None:
            raise ConfigurationError(f"no service runs jobs of kind {job.kind!r}")
        return handler(job, task)

    def _ingest_task(
        self, job: IngestionJob, task: JobTask, router: Router, tick: Callable[[str], None]
    ) -> JobTask:
        """Fetch, validate and store a task's symbols; return the task, succeeded."""
        assert job.request_start is not None and job.request_end is not None
        tf = Timeframe.parse(job.timeframe or "1d")
        with stage("acquire"):
            raw = acquire(
                router,
                task.symbols,
                job.request_start,
                job.request_end,
                tf,
                BatchId(job.job_id, task.task_id, task.attempts),
                self.clock,
                concurrency=self.settings.fetch_concurrency,
                progress=tick,
            )
        stored = self.runner.ingest(raw)
        report = stored.report if stored is not None else None
        return task.model_copy(
            update={
                "status": TaskStatus.SUCCEEDED,
                "records_processed": report.total_records if report else 0,
                "records_failed": report.invalid_records if report else 0,
                "symbols_failed": len(raw.failures) + len(raw.empty),
                "error_details": _details(raw),
                "quality": report,
            }
        )

    def _task_failed(
        self, task: JobTask, worker: str, exc: BaseException, *, permanent: bool = False
    ) -> TaskStatus | None:
        """Put a queued task back on its queue, or fail it once its attempts are spent (at
        once when `permanent`: a missing handler fails every attempt alike)."""
        job = self.catalog.job(task.job_id)
        detail = {"kind": type(exc).__name__, "message": str(exc), "attempt": task.attempts}
        spent = job.max_attempts > 0 and task.attempts >= job.max_attempts
        if permanent:
            spent = True
            detail["message"] = f"failed for good (no retry can help): {exc}"
        elif spent:
            detail["message"] = f"gave up after {task.attempts} attempts: {exc}"
        update: dict[str, object] = {
            "status": TaskStatus.FAILED if spent else TaskStatus.PENDING,
            "error_details": [*task.error_details, detail],
        }
        log.warning("task %s failed (attempt %d): %s", task.task_id, task.attempts, exc)
        stored = self.catalog.finish_task(task.model_copy(update=update), worker, self.clock.now())
        if stored and self.events is not None:
            self.events("failed" if spent else "released")
        if not stored:
            return None
        return TaskStatus.FAILED if spent else TaskStatus.PENDING

    # -- workers ---------------------------------------------------------------------------
    def run_next(self, worker: str, queue: str) -> JobTask | None:
        """Claim one task of `queue` and run it; None when the queue has nothing pending."""
        task = self.claim_next(worker, queue)
        if task is not None:
            self.execute(task, worker)
        return task

    def claim_next(self, worker: str, queue: str) -> JobTask | None:
        """Lease the next pending task of `queue` to `worker`, or return None."""
        task = self.catalog.claim_task(worker, self.settings.lease_s, self.clock.now(), queue=queue)
        if task is not None and self.events is not None:
            self.events("claimed")
        return task

    def claim_task(self, task_id: str, worker: str) -> JobTask | None:
        """Lease one named task (a task queue delivered it), or None if it is not pending.

        A task whose holder died is still `running` until its lease is reaped: reap, retry.
        """
        task = self.catalog.claim_task(
            worker, self.settings.lease_s, self.clock.now(), task_id=task_id
        )
        if task is None and self.expire_leases():
            task = self.catalog.claim_task(
                worker, self.settings.lease_s, self.clock.now(), task_id=task_id
            )
        if task is not None and self.events is not None:
            self.events("claimed")
        return task

    def task_open(self, task_id: str) -> bool:
        """Say whether a task is still to run or running (not finished, and known)."""
        job_id = task_id.rsplit("/", 1)[0]
        try:
            tasks = self.catalog.tasks(job_id)
        except QuantiVistaError:
            return False
        return any(t.task_id == task_id and t.status not in _DONE for t in tasks)

    def execute(
        self, task: JobTask, worker: str, *, touch: Callable[[], None] | None = None
    ) -> TaskStatus | None:
        """Run a claimed task, then finish its job if it was the last one; return its status.

        `touch` is called with every heartbeat (a task queue's delivery kept alive).
        """
        job, router = self._job_of(task.job_id)
        try:
            status = self._run_task(job, task, worker, router, lambda _symbol: None, touch)
        finally:
            # provider statistics for other processes: every few seconds, not every task
            if self.after_run is not None and time.monotonic() - self._stats_at >= _STATS_S:
                self._stats_at = time.monotonic()
                self.after_run()
        if not self.catalog.open_tasks(task.job_id):  # one count per task; the job is read
            self._finish(task.job_id)  # (all its symbols, a model) only once none is left
        return status

    def _router(self, job: IngestionJob) -> Router | None:
        """The providers' router of an ingest job (other kinds fetch nothing)."""
        if job.kind != "ingest":
            return None
        return self.acquisition.router(job.providers or job.source_id.split(","))

    def _job_of(self, job_id: str) -> tuple[IngestionJob, Router | None]:
        """Return a job (marked running) and its router, read once per job and process."""
        known = self._jobs.get(job_id)
        if known is not None:
            return known
        job = self.catalog.job(job_id)
        if job.status is JobStatus.PENDING:
            job.status = JobStatus.RUNNING
            self.catalog.save_job(job)
        known = (job, self._router(job))
        if len(self._jobs) >= 64:  # a long-lived worker sees many jobs: keep the recent ones
            self._jobs.pop(next(iter(self._jobs)))
        self._jobs[job_id] = known
        return known

    def release(self, task: JobTask, worker: str) -> bool:
        """Give a held task back to its queue unrun (a worker shutting down); not an attempt."""
        back = task.model_copy(
            update={"status": TaskStatus.PENDING, "attempts": max(task.attempts - 1, 0)}
        )
        released = self.catalog.finish_task(back, worker, self.clock.now())
        if released and self.events is not None:
            self.events("released")
        return released

    def progress(self, job_id: str) -> tuple[int, int]:
        """Return (finished tasks, tasks) of a job."""
        tasks = self.catalog.tasks(job_id)
        return sum(t.status in _DONE for t in tasks), len(tasks)

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 0.5,
        progress: Callable[[int, int], None] | None = None,
    ) -> IngestionJob:
        """Block until the job has ended (workers run it elsewhere); return it.

        Raises `TimeoutError` after `timeout_s` (None: wait for ever).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self.expire_leases()
            job = self.catalog.job(job_id)
            if progress is not None:
                progress(*self.progress(job_id))
            if job.status in _ENDED:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.status.value} after {timeout_s} s")
            time.sleep(poll_s)

    def _fail(self, job_id: str, exc: BaseException) -> None:
        job = self.catalog.job(job_id)
        job.status = JobStatus.FAILED
        job.end_time = self.clock.now()
        job.error_details.append({"scope": "job", "kind": type(exc).__name__, "message": str(exc)})
        self.catalog.save_job(job)
        record_job(job.kind, JobStatus.FAILED.value)

    def _finish(self, job_id: str) -> IngestionJob:
        """Roll the tasks' outcomes up into the job once none is left to run."""
        if self.catalog.open_tasks(job_id):  # one count, not every task read per task
            return self.catalog.job(job_id)
        job = self.catalog.job(job_id)
        tasks = self.catalog.tasks(job_id)
        if not tasks or any(t.status not in _DONE for t in tasks):
            return job  # others still run tasks, or the job failed and waits for recovery
        if job.status in (JobStatus.SUCCEEDED, JobStatus.PARTIAL):
            return job
        job.records_processed = sum(t.records_processed for t in tasks)
        job.records_failed = sum(t.records_failed for t in tasks)
        reports = [t.quality for t in tasks if t.quality is not None]
        job.quality = DataQualityReport.merge(job.job_id, reports)
        own = [d for d in job.error_details if d.get("scope") == "job"]
        job.error_details = own + [d for t in tasks for d in t.error_details]
        failed_symbols = sum(t.symbols_failed for t in tasks)
        if any(t.status is TaskStatus.FAILED for t in tasks) or failed_symbols == len(job.symbols):
            job.status = JobStatus.FAILED
        elif failed_symbols or job.records_failed:
            job.status = JobStatus.PARTIAL
        else:
            job.status = JobStatus.SUCCEEDED
        job.end_time = self.clock.now()
        self.catalog.save_job(job)
        record_job(job.kind, job.status.value)
        return job

    # -- follow and recover ----------------------------------------------------------------
    def expire_leases(self) -> list[str]:
        """Apply lapsed leases: fail the submitters' jobs, requeue workers'; return the jobs."""
        affected = self.catalog.expire_leases(self.clock.now())
        for job_id in affected:
            if self.events is not None:
                self.events("reaped")
            if self.catalog.job(job_id).queue is not None:
                self._finish(job_id)  # its last task may have just spent its attempts
        return affected

    def jobs(
        self, limit: int = 50, status: JobStatus | None = None, *, tenant: str | None = None
    ) -> list[IngestionJob]:
        """Return recent jobs, newest first (a job whose worker died shows as failed).

        With `tenant`, only that tenant's jobs.
        """
        wanted = limit if tenant is None else max(limit * 20, 1000)
        listed = self.catalog.jobs(wanted, status)
        active = (JobStatus.PENDING, JobStatus.RUNNING)
        if any(j.status in active for j in listed) and self.expire_leases():
            listed = self.catalog.jobs(wanted, status)
        if tenant is not None:
            listed = [j for j in listed if j.tenant == tenant]
        return listed[:limit]

    def job(self, job_id: str) -> IngestionJob:
        """Return one job."""
        return self.catalog.job(job_id)

    def tasks(self, job_id: str) -> list[JobTask]:
        """Return the tasks of a job."""
        return self.catalog.tasks(job_id)

    def recoverable(self) -> list[IngestionJob]:
        """Return failed jobs that still have tasks to run (their worker died, or a bug)."""
        self.expire_leases()
        return [
            j
            for j in self.catalog.jobs(10_000, JobStatus.FAILED)
            if any(t.status is not TaskStatus.SUCCEEDED for t in self.catalog.tasks(j.job_id))
        ]

    def recover(
        self, job_id: str | None = None, *, progress: Progress | None = None
    ) -> list[IngestionJob]:
        """Resume failed jobs' unfinished tasks (one job, or every recoverable one)."""
        if job_id is None:
            targets = [j.job_id for j in self.recoverable()]
        else:
            self.expire_leases()
            job = self.catalog.job(job_id)
            unfinished = [
                t for t in self.catalog.tasks(job_id) if t.status is not TaskStatus.SUCCEEDED
            ]
            if job.status is not JobStatus.FAILED or not unfinished:
                raise InvalidInputError(
                    "only a failed job with unfinished tasks can be recovered",
                    job_id=job_id,
                    status=job.status.value,
                )
            targets = [job_id]
        recovered = []
        for target in targets:
            self.catalog.reset_tasks(target, [TaskStatus.FAILED])
            job = self.catalog.job(target)
            job.status = JobStatus.RUNNING
            job.end_time = None
            job.error_details.append(
                {"scope": "job", "kind": "recovered", "at": self.clock.now().isoformat()}
            )
            self.catalog.save_job(job)
            recovered.append(self.run(target, progress=progress))
        return recovered


def _details(raw: RawBatch) -> list[dict[str, object]]:
    """Return the per-symbol problems of a batch: failures, then empty answers."""
    out: list[dict[str, object]] = []
    for failure in raw.failures:  # one entry per failed symbol
        error = failure.error
        detail: dict[str, object] = {
            "symbol": failure.symbol,
            "kind": type(error).__name__,
            "message": error.message,
            "retryable": error.is_retryable(),
        }
        if isinstance(error, ProviderError) and error.provider:
            detail["provider"] = error.provider
        if "attempts" in error.context:
            detail["attempts"] = error.context["attempts"]
        out.append(detail)
    out.extend(
        {"symbol": s, "kind": "no_data", "message": "provider returned no bars"} for s in raw.empty
    )
    return out
