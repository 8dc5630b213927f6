"""Writes: user bars and corporate actions, reconciled action feeds, quarantine releases."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from uuid import uuid4

import polars as pl

from quantivista.actions.reconcile import ReconcileReport, plan_action_ingest
from quantivista.bus.base import EventBus
from quantivista.bus.events import BarsIngested, Event
from quantivista.clock import Clock
from quantivista.errors import InvalidInputError, NotFoundError
from quantivista.model.jobs import DataQualityReport
from quantivista.model.schema import BAR_COLUMNS, FrameLike, coerce_actions, coerce_bars
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.pipeline.messages import BatchId
from quantivista.pipeline.recent import RecentHistory
from quantivista.pipeline.runner import InProcessRunner
from quantivista.pipeline.stages import announce_actions, mark_changed, store_actions
from quantivista.services.queries import symbol_list
from quantivista.storage.contracts import ActionStore, JobCatalog, QuarantineStore

__all__ = ["WriteService", "new_job_id"]


def new_job_id(now: datetime) -> str:
    """Return a job id that sorts by start time: `job-20240102T143000-1a2b3c4d`."""
    return f"job-{now:%Y%m%dT%H%M%S}-{uuid4().hex[:8]}"


class WriteService:
    """Every write that does not come from a provider job goes through here."""

    def __init__(
        self,
        runner: InProcessRunner,
        actions: ActionStore,
        quarantine: QuarantineStore,
        bus: EventBus,
        clock: Clock,
        catalog: JobCatalog,
        *,
        keep_recent: bool = False,
    ) -> None:
        self.catalog = catalog
        self.runner = runner
        self.actions = actions
        self.quarantine = quarantine
        self.bus = bus
        self.clock = clock
        # `ingest.keep_recent_history`: the bars `write_bars` stored, per timeframe, as the
        # next batch's validation history (`pipeline.recent`); bars another writer of this
        # process stores (jobs, releases) make it read those series again
        self.keep_recent = keep_recent
        self._recent: dict[str, RecentHistory] = {}
        self._lock = threading.Lock()
        self._writing: str | None = None  # the job id of the write in progress
        if keep_recent:
            bus.subscribe(BarsIngested.topic, self._stored_elsewhere, name="write-recent")

    def write_bars(
        self, frame: FrameLike, source: str = "user", timeframe: TimeframeLike | None = None
    ) -> DataQualityReport:
        """Validate and store bars in the canonical schema; return the quality report."""
        batch_id = BatchId(new_job_id(self.clock.now()))
        if not self.keep_recent or timeframe is None:
            return self.runner.write(
                frame, source=source, batch_id=batch_id, timeframe=timeframe
            ).report
        tf = str(Timeframe.parse(timeframe))
        with self._lock:
            recent = self._recent.get(tf)
            if recent is None:
                recent = RecentHistory(self.runner.sinks.bars, self.runner.validator(), tf)
                self._recent[tf] = recent
            self._writing = batch_id.job_id
            try:
                stored = self.runner.write(
                    frame, source=source, batch_id=batch_id, timeframe=timeframe, recent=recent
                )
            except BaseException:
                recent.forget()  # what landed is not known: read it all again
                raise
            finally:
                self._writing = None
        return stored.report

    def _stored_elsewhere(self, event: Event) -> None:
        """Forget the kept history of series another writer of this process stored."""
        if not isinstance(event, BarsIngested) or event.job_id == self._writing:
            return
        with self._lock:  # (a write of another thread: after it)
            recent = self._recent.get(event.timeframe)
            if recent is not None:
                recent.forget(event.symbols)

    def write_actions(self, frame: FrameLike, provider: str | None = None) -> int:
        """Store corporate actions (canonical action schema); return how many were new."""
        fresh = store_actions(coerce_actions(frame, provider=provider), self.actions)
        if fresh.height:
            mark_changed(self.catalog, self.clock.now())
        announce_actions(fresh, provider or "user", self.bus, self.clock)
        return fresh.height

    def ingest_actions(
        self,
        sources: Mapping[str, FrameLike] | Sequence[FrameLike],
        *,
        priority: Sequence[str] | None = None,
        date_tolerance_days: int = 3,
        value_tolerance: float = 1e-3,
    ) -> ReconcileReport:
        """Reconcile actions from several sources and the store; keep and announce new ones."""
        plan = plan_action_ingest(
            self.actions.for_symbols,
            sources,
            priority=priority,
            date_tolerance_days=date_tolerance_days,
            value_tolerance=value_tolerance,
        )
        written = store_actions(plan.fresh, self.actions)
        if written.height:
            mark_changed(self.catalog, self.clock.now())
            source = "+".join(sorted(written["provider"].unique().to_list()))
            announce_actions(written, source, self.bus, self.clock)
        return plan.report(new=written.height)

    def release_quarantine(
        self,
        job_id: str | None = None,
        symbols: str | Sequence[str] | None = None,
        rule: str | None = None,
        *,
        corrected: FrameLike | None = None,
        demote: Sequence[str] = (),
    ) -> DataQualityReport:
        """Send held quarantine rows back through the write path; return its report.

        Rows are chosen by job, symbols and/or rule. `corrected` (canonical bars keyed by
        symbol, timeframe, ts) replaces the matching rows' values; `demote` names rules that
        only flag these rows this time. Rows that still fail go back to quarantine under
        the release job; released rows stay on record, marked released.
        """
        syms = None if symbols is None else symbol_list(symbols)
        held = self.quarantine.list(syms, job_id, rule)
        if held.is_empty():
            raise NotFoundError("no held quarantine rows match", job_id=job_id, rule=rule)
        release_job = new_job_id(self.clock.now())
        frame = held.select(BAR_COLUMNS).with_columns(
            quality_flags=pl.lit(0, pl.UInt32),
            ingested_at=pl.lit(None, held.schema["ingested_at"]),
            job_id=pl.lit(release_job),
        )
        frame = frame.unique(list(BAR_COLUMNS), keep="first", maintain_order=True)
        if corrected is not None:
            fixed = coerce_bars(corrected, job_id=release_job)
            key = ["symbol", "timeframe", "ts"]
            stray = fixed.join(frame, on=key, how="anti")
            if stray.height:
                raise InvalidInputError(
                    "corrected rows must match held quarantine rows by symbol, timeframe, ts",
                    unmatched=stray.height,
                )
            fixed = fixed.with_columns(
                pl.col("provider").fill_null(pl.lit("user")),
                ingested_at=pl.lit(None, held.schema["ingested_at"]),
            )
            frame = pl.concat([frame.join(fixed, on=key, how="anti"), fixed.select(frame.columns)])
        validator = self.runner.validator().demoted(demote) if demote else None
        outcome = self.runner.write(
            frame,
            source="quarantine",
            batch_id=BatchId(release_job),
            validator=validator,
            release=True,
        )
        self.quarantine.mark_released(held, release_job_id=release_job, at=self.clock.now())
        return outcome.report
