"""`qv scheduler`: registered jobs on cron lines or after exchanges' session closes.

    scheduler = Scheduler.from_runtime(runtime)
    scheduler.tick()                  # runs what is due, if this process holds the lease

One scheduler is active per store: the leader holds a lease (a file lock on the embedded
store, an advisory lock on PostgreSQL); others wait as standbys and take over when it dies.
Each entry's last run is kept in the job catalog's state (`scheduler:<entry>`), so a restart
continues where the previous process stopped: a run missed while no scheduler was up runs
once (not once per missed slot), and a slot already run is not run again.

Jobs are callables registered by name (`register_job`); retention, backup, compaction and
the universe update are built in, and plug-ins (source syncs) register theirs.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl
from croniter import croniter

from quantivista.clock import Clock
from quantivista.config import ScheduleEntry, SchedulerSettings, Settings
from quantivista.errors import ConfigurationError, InvalidInputError
from quantivista.model.jobs import JobStatus
from quantivista.ops import metrics
from quantivista.ops.alerting import start_alerting
from quantivista.ops.probes import ProbeServer
from quantivista.ops.tracing import configure as configure_tracing
from quantivista.reference.calendars import TradingCalendar
from quantivista.storage.contracts import JobCatalog

if TYPE_CHECKING:
    from quantivista.runtime import Runtime

__all__ = [
    "JOBS",
    "JobContext",
    "JobRegistry",
    "Lease",
    "RunRecord",
    "Scheduler",
    "Skipped",
    "Trigger",
    "leader_lease",
    "register_job",
    "run_scheduler",
]

log = logging.getLogger(__name__)
STATE_PREFIX = "scheduler:"


class Lease(Protocol):
    """Leadership: at most one holder at a time; lost when the holder dies."""

    def acquire(self) -> bool: ...
    def renew(self) -> bool: ...
    def release(self) -> None: ...


class Skipped(Exception):
    """Raised by a job with nothing to do (its reason is recorded)."""


@dataclass(frozen=True)
class JobContext:
    """What a job gets: the platform, its entry, the slot it runs for and its arguments."""

    runtime: Runtime
    entry: str
    scheduled_for: datetime
    args: Mapping[str, Any]
    exchange: str | None = None


JobFn = Callable[[JobContext], Mapping[str, Any] | None]


class JobRegistry:
    """Job callables by name."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobFn] = {}

    def register(self, name: str, fn: JobFn) -> JobFn:
        """Register `fn` under `name` (replacing a previous one)."""
        self._jobs[name] = fn
        return fn

    def get(self, name: str) -> JobFn:
        """Return the job called `name`; `ConfigurationError` naming the known ones if none."""
        try:
            return self._jobs[name]
        except KeyError:
            raise ConfigurationError(
                f"no scheduled job is registered as {name!r}", known=", ".join(self.names())
            ) from None

    def names(self) -> list[str]:
        """Return the registered job names, sorted."""
        return sorted(self._jobs)


JOBS = JobRegistry()


def register_job(name: str) -> Callable[[JobFn], JobFn]:
    """Decorator: make `fn` a job that schedule entries can name (`job = "<name>"`)."""

    def decorate(fn: JobFn) -> JobFn:
        return JOBS.register(name, fn)

    return decorate


# -- triggers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trigger:
    """One schedule of one entry: its cron line, or one exchange's closes plus an offset."""

    key: str  # the entry's name, with "@MIC" for an after-close trigger
    entry: str
    spec: ScheduleEntry
    exchange: str | None = None

    def next_after(self, t: datetime, calendar: Callable[[str], TradingCalendar]) -> datetime:
        """Return the first slot strictly after `t`."""
        if self.spec.cron is not None:
            return croniter(self.spec.cron, t).get_next(datetime)
        slots = self._closes(t - timedelta(days=1), t + timedelta(days=15), calendar)
        later = slots.filter(slots > t)
        if later.is_empty():
            raise ConfigurationError("no session close ahead", exchange=self.exchange, after=str(t))
        return later[0]  # type: ignore[no-any-return]

    def latest_at_or_before(
        self, t: datetime, calendar: Callable[[str], TradingCalendar]
    ) -> datetime | None:
        """Return the last slot at or before `t` (the one a late run catches up on)."""
        if self.spec.cron is not None:
            it = croniter(self.spec.cron, t + timedelta(microseconds=1))
            return it.get_prev(datetime)
        slots = self._closes(t - timedelta(days=15), t + timedelta(days=1), calendar)
        earlier = slots.filter(slots <= t)
        return earlier[-1] if len(earlier) else None

    def _closes(
        self, first: datetime, last: datetime, calendar: Callable[[str], TradingCalendar]
    ) -> pl.Series:
        assert self.exchange is not None
        cal = calendar(self.exchange)
        table = cal.session_table(
            max(first.date(), cal.first_session), min(last.date(), cal.last_session)
        )
        offset = timedelta(minutes=self.spec.offset_minutes)
        return (table["close"] + offset).sort()


def triggers(entries: Mapping[str, ScheduleEntry]) -> list[Trigger]:
    """Expand entries into triggers: one per cron entry, one per exchange of an after-close."""
    out: list[Trigger] = []
    for name, spec in sorted(entries.items()):
        if not spec.enabled:
            continue
        if spec.cron is not None:
            out.append(Trigger(name, name, spec))
        else:
            out += [Trigger(f"{name}@{mic}", name, spec, mic) for mic in spec.after_close]
    return out


# -- the scheduler ---------------------------------------------------------------------------
@dataclass
class RunRecord:
    """One run of one trigger."""

    key: str
    job: str
    scheduled_for: datetime
    started_at: datetime
    duration_s: float
    outcome: str  # succeeded, failed, skipped
    detail: dict[str, Any] = field(default_factory=dict)

    def as_state(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "scheduled_for": self.scheduled_for.isoformat(),
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 6),
            "outcome": self.outcome,
            "detail": self.detail,
        }


class Scheduler:
    """Runs due triggers while holding the lease; remembers last runs in the catalog."""

    def __init__(
        self,
        settings: SchedulerSettings,
        *,
        catalog: JobCatalog,
        clock: Clock,
        lease: Lease,
        calendar: Callable[[str], TradingCalendar],
        context: Callable[[Trigger, datetime], JobContext],
        jobs: JobRegistry = JOBS,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.clock = clock
        self.lease = lease
        self.calendar = calendar
        self.context = context
        self.jobs = jobs
        self.triggers = triggers(settings.entries)
        for trigger in self.triggers:  # a typo fails at start, not at 2 a.m.
            jobs.get(trigger.spec.job)
        self.leader = False
        self.last_tick = time.monotonic()

    @classmethod
    def from_runtime(cls, runtime: Runtime, *, jobs: JobRegistry = JOBS) -> Scheduler:
        """Build the scheduler of a runtime (its catalog, clock, calendars and lease)."""
        settings = runtime.settings
        return cls(
            settings.scheduler,
            catalog=runtime.backend.catalog,
            clock=runtime.clock,
            lease=leader_lease(settings, runtime.backend.kind),
            calendar=runtime.calendar,
            context=lambda t, at: JobContext(runtime, t.entry, at, t.spec.args, t.exchange),
            jobs=jobs,
        )

    # -- state -------------------------------------------------------------------------------
    def state(self, key: str) -> dict[str, Any] | None:
        """Return the last run (or the arming time) kept for a trigger."""
        return self.catalog.get_state(STATE_PREFIX + key)

    def due(self, now: datetime) -> list[tuple[Trigger, datetime]]:
        """Return the triggers due at `now`, each with the slot it runs for.

        A trigger never seen before is armed at `now` (it first runs at its next slot).
        """
        out = []
        for trigger in self.triggers:
            kept = self.state(trigger.key)
            if kept is None:
                self.catalog.put_state(STATE_PREFIX + trigger.key, {"armed_at": now.isoformat()})
                continue
            since = datetime.fromisoformat(kept.get("scheduled_for") or kept["armed_at"])
            if trigger.next_after(since, self.calendar) > now:
                continue
            slot = trigger.latest_at_or_before(now, self.calendar)
            if slot is not None and slot > since:
                out.append((trigger, slot))
        return out

    def status(self) -> pl.DataFrame:
        """Return each trigger with its last run and next slot."""
        now = self.clock.now()
        rows = []
        for trigger in self.triggers:
            kept = self.state(trigger.key) or {}
            since = kept.get("scheduled_for") or kept.get("armed_at")
            base = datetime.fromisoformat(since) if since else now
            rows.append(
                {
                    "entry": trigger.key,
                    "job": trigger.spec.job,
                    "last_slot": kept.get("scheduled_for"),
                    "outcome": kept.get("outcome"),
                    "duration_s": kept.get("duration_s"),
                    "next_slot": trigger.next_after(max(base, now), self.calendar).isoformat(),
                }
            )
        return pl.DataFrame(
            rows,
            schema={"entry": pl.String, "job": pl.String, "last_slot": pl.String,
                    "outcome": pl.String, "duration_s": pl.Float64, "next_slot": pl.String},
        )  # fmt: skip

    # -- running -----------------------------------------------------------------------------
    def tick(self) -> list[RunRecord]:
        """Take (or keep) the lease and run what is due; a standby runs nothing."""
        self.last_tick = time.monotonic()
        self.leader = self.lease.renew() if self.leader else self.lease.acquire()
        metrics.SCHEDULER_LEADER.set(1 if self.leader else 0)
        if not self.leader:
            return []
        metrics.SCHEDULER_HEARTBEAT.set(self.clock.now().timestamp())
        return [self.run(trigger, slot) for trigger, slot in self.due(self.clock.now())]

    def run(self, trigger: Trigger, slot: datetime) -> RunRecord:
        """Run one trigger for `slot` now and record the outcome (a failure is recorded)."""
        fn = self.jobs.get(trigger.spec.job)
        started_at = self.clock.now()
        began = time.perf_counter()
        metrics.JOBS_RUNNING.labels(trigger.spec.job).inc()
        try:
            detail = dict(fn(self.context(trigger, slot)) or {})
            outcome = "succeeded"
        except Skipped as why:
            detail, outcome = {"reason": str(why)}, "skipped"
        except Exception as exc:  # recorded and alerted on; the scheduler keeps running
            log.exception("scheduled job %s failed", trigger.key)
            detail, outcome = {"error": f"{type(exc).__name__}: {exc}"}, "failed"
        finally:
            metrics.JOBS_RUNNING.labels(trigger.spec.job).dec()
        record = RunRecord(
            trigger.key, trigger.spec.job, slot, started_at, time.perf_counter() - began,
            outcome, detail,
        )  # fmt: skip
        self.catalog.put_state(STATE_PREFIX + trigger.key, record.as_state())
        metrics.record_job(f"scheduled:{trigger.spec.job}", outcome)
        metrics.SCHEDULER_LAST_RUN.labels(trigger.key, outcome).set(started_at.timestamp())
        return record

    def run_forever(self, stop: threading.Event) -> None:
        """Tick every `tick_s` until `stop` is set; give the lease up on the way out."""
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:  # a store hiccup: logged, and the next tick tries again
                    log.exception("scheduler tick failed")
                stop.wait(self.settings.tick_s)
        finally:
            self.lease.release()
            self.leader = False
            metrics.SCHEDULER_LEADER.set(0)


def leader_lease(settings: Settings, backend_kind: str, name: str = "scheduler") -> Lease:
    """Return the lease for `name` on the store in use."""
    if backend_kind == "postgres":
        from quantivista.storage.postgres.lease import AdvisoryLease

        dsn = settings.services.postgres_dsn.get_secret_value()
        return AdvisoryLease(dsn, f"quantivista:{settings.storage.postgres_schema}:{name}")
    from quantivista.storage.lake.lease import FileLease

    return FileLease(settings.data_dir, name)


def run_scheduler(runtime: Runtime, *, stop: threading.Event | None = None) -> None:
    """Serve `qv scheduler`: probes on `probes.ports.scheduler`, ticks until SIGTERM/SIGINT."""
    configure_tracing(runtime.settings.tracing, "scheduler")
    scheduler = Scheduler.from_runtime(runtime)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    settings = runtime.settings

    def is_open(mic: str) -> Callable[[], bool]:
        return lambda: runtime.calendar(mic).is_open(runtime.clock.now())

    exchanges = {t.exchange for t in scheduler.triggers if t.exchange}
    metrics.watch_process(
        "scheduler", data_dir=settings.data_dir, markets={m: is_open(m) for m in exchanges}
    )
    probes = ProbeServer(
        "scheduler", settings.probes, registries=[runtime.acquisition.analytics.registry]
    )
    probes.add_check("store", lambda: runtime.backend.catalog.get_state("readyz") is None or True)
    stale_s = max(3 * settings.scheduler.tick_s, 30.0)

    def looping() -> bool | str:
        age = time.monotonic() - scheduler.last_tick
        return True if age < stale_s else f"no tick for {age:.0f} s"

    probes.add_check("loop", looping)
    with probes:
        log.info("scheduler probes on %s", probes.url)
        start_alerting(
            settings.alerting, [runtime.acquisition.analytics.registry],
            service="scheduler", stop=stop, clock=runtime.clock,
        )  # fmt: skip
        scheduler.run_forever(stop)
        probes.draining()


# -- built-in jobs ---------------------------------------------------------------------------
@register_job("retention")
def _retention(ctx: JobContext) -> dict[str, Any]:
    outcome = ctx.runtime.maintenance.retention()
    return {"rows": outcome.rows, "archived_to": outcome.archived_to}


@register_job("compaction")
def _compaction(ctx: JobContext) -> dict[str, Any]:
    try:
        return {"files_removed": ctx.runtime.maintenance.compact()}
    except InvalidInputError as exc:  # PostgreSQL: nothing to compact
        raise Skipped(str(exc)) from None


def backup_dir(settings: Settings) -> Path:
    """Return where scheduled backups go."""
    data = settings.data_dir.resolve()
    return settings.scheduler.backup_dir or data.parent / f"{data.name}-backups"


@register_job("backup")
def _backup(ctx: JobContext) -> dict[str, Any]:
    root = Path(ctx.args.get("dir") or backup_dir(ctx.runtime.settings))
    dest = root / f"{ctx.scheduled_for:%Y%m%dT%H%M%SZ}"
    if dest.exists():  # this slot was backed up by a run that died before recording it
        shutil.rmtree(dest)
    root.mkdir(parents=True, exist_ok=True)
    ctx.runtime.maintenance.backup(dest)
    keep = int(ctx.args.get("keep") or ctx.runtime.settings.scheduler.keep_backups)
    old = sorted(p for p in root.iterdir() if p.is_dir())[:-keep]
    for path in old:
        shutil.rmtree(path)
    return {"dest": str(dest), "pruned": [p.name for p in old]}


@register_job("workflow_sources")
def _workflow_sources(ctx: JobContext) -> dict[str, Any]:
    """Run the reporting-side BATCH_SCHEDULED sources whose cron schedule fired."""
    jobs = ctx.runtime.workflows.run_due(ctx.scheduled_for)
    if not jobs:
        raise Skipped("no scheduled source is due")
    return {
        "jobs": {f"{j.tenant_id}/{j.source_id}": j.job_id for j in jobs},
        "failed": [j.job_id for j in jobs if j.status.value == "failed"],
    }


def universe(runtime: Runtime, exchange: str, on: date) -> list[str]:
    """Return the symbols of the instruments listed on `exchange` on `on` (instrument master)."""
    master = runtime.reference.instruments
    listed = master.instruments().filter(
        (pl.col("exchange") == exchange)
        & (pl.col("listed").is_null() | (pl.col("listed") <= on))
        & (pl.col("delisted").is_null() | (pl.col("delisted") >= on))
    )
    tickers = master.symbol_history().filter(
        (pl.col("valid_from").is_null() | (pl.col("valid_from") <= on))
        & (pl.col("valid_to").is_null() | (pl.col("valid_to") >= on))  # inclusive
    )
    joined = listed.join(tickers, on="instrument_id", how="inner")
    return sorted(joined["symbol"].unique().to_list())


@register_job("universe_update")
def _universe_update(ctx: JobContext) -> dict[str, Any]:
    runtime = ctx.runtime
    exchange = ctx.exchange or str(ctx.args.get("exchange") or runtime.settings.ingest.calendar)
    cal = runtime.calendar(exchange)
    closed = cal.schedule.filter(pl.col("close") <= ctx.scheduled_for)
    if closed.is_empty():
        raise Skipped(f"no session of {exchange} closed before {ctx.scheduled_for}")
    session: date = closed["session"][-1]
    symbols = list(ctx.args.get("symbols") or universe(runtime, exchange, session))
    if not symbols:
        raise Skipped(f"no instruments listed on {exchange}")
    lookback = int(ctx.args.get("lookback_days", 5))  # late corrections of recent days
    providers: Iterable[str] | None = ctx.args.get("providers")
    job = runtime.ingestion.ingest(
        symbols, session - timedelta(days=lookback), session, "1d",
        list(providers) if providers else None,
    )  # fmt: skip
    if job.status is JobStatus.FAILED:
        raise RuntimeError(f"ingestion job {job.job_id} failed: {job.error_details[:1]}")
    return {"job_id": job.job_id, "status": job.status.value, "session": str(session),
            "symbols": len(symbols)}  # fmt: skip


@register_job("sla_probe")
def _sla_probe(ctx: JobContext) -> dict[str, Any]:
    from quantivista.services.sla import SlaService

    return SlaService.from_runtime(ctx.runtime).probe()
