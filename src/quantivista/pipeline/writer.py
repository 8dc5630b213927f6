"""The write path every batch takes: coerce -> validate -> store -> quarantine -> publish."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from quantivista.bus.base import EventBus
from quantivista.bus.events import BarsIngested, BarsQuarantined
from quantivista.clock import Clock
from quantivista.model.jobs import DataQualityReport
from quantivista.model.schema import FrameLike, coerce_bars
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.processing.rollup import Rollup
from quantivista.quality.validate import Validator
from quantivista.storage.base import BarStore, UpsertStats
from quantivista.storage.contracts import ActionStore, JobCatalog, QuarantineStore, ScoreStore

__all__ = ["BarWriter", "WriteOutcome"]


@dataclass(slots=True)
class WriteOutcome:
    """What one batch write did."""

    report: DataQualityReport
    stats: UpsertStats
    quarantined: int


class BarWriter:
    """Write batches of bars through validation into the store, losing nothing."""

    def __init__(
        self,
        store: BarStore,
        quarantine: QuarantineStore,
        catalog: JobCatalog,
        bus: EventBus,
        validator: Validator,
        clock: Clock,
        rollup: Rollup | None = None,
        actions: ActionStore | None = None,
        scores: ScoreStore | None = None,
    ) -> None:
        self.actions = actions  # known corporate actions keep real splits from looking like spikes
        self.scores = scores  # per symbol-day quality scores, kept for trends
        self.store = store
        self.quarantine = quarantine
        self.catalog = catalog
        self.bus = bus
        self.validator = validator
        self.clock = clock
        self.rollup = rollup

    def write(
        self,
        frame: FrameLike,
        *,
        source: str,
        job_id: str,
        timeframe: TimeframeLike | None = None,
        validator: Validator | None = None,
    ) -> WriteOutcome:
        """Validate and store one batch; rejected rows go to quarantine with their reasons.

        `validator` overrides the writer's own for this batch (e.g. a quarantine release
        with some rules demoted to warnings).
        """
        now = self.clock.now()
        bars = coerce_bars(
            frame, timeframe=timeframe, provider=source, job_id=job_id, ingested_at=now
        )
        symbols = _distinct(bars["symbol"]) if bars.height else []
        actions = None
        if self.actions is not None and bars.height:
            actions = self.actions.for_symbols(symbols)
        result = (validator or self.validator).validate(
            bars, job_id=job_id, actions=actions, history=self._history(bars, symbols)
        )
        if self.scores is not None:
            self.scores.add(result.scores, now)
        stats = self.store.upsert(result.clean)
        if stats.written and self.rollup is not None:
            self.rollup.refresh(result.clean)  # derived timeframes follow their 1m bars
        quarantined = self.quarantine.add(result.rejected, job_id=job_id, at=now)
        self.catalog.save_report(result.report, now)
        if stats.written:
            # nothing rejected: the stored rows hold every symbol of the batch
            known = symbols if result.rejected.is_empty() else None
            self._announce(result.clean, source, job_id, stats, known)
        if quarantined:
            self.bus.publish(
                BarsQuarantined(
                    occurred_at=now,
                    job_id=job_id,
                    source=source,
                    rows=quarantined,
                    rules=_rule_counts(result.rejected),
                )
            )
        return WriteOutcome(result.report, stats, quarantined)

    def _history(self, bars: pl.DataFrame, symbols: list[str]) -> pl.DataFrame | None:
        """Return stored bars just before the batch: the warm-up of the rolling statistics."""
        if bars.is_empty() or _one_timeframe(bars) is None:
            return None
        tf = Timeframe.parse(str(bars["timeframe"][0]))
        first = bars["ts"].min()
        assert isinstance(first, datetime)
        # enough calendar time for the rolling window (trading days are ~5/7 of days)
        span = tf.seconds * 3 * self.validator.settings.spike_window if tf.seconds else None
        lookback = timedelta(seconds=span) if span else timedelta(days=45)
        history = self.store.read(symbols, tf, first - lookback, first)
        return history if history.height else None

    def _announce(
        self,
        clean: pl.DataFrame,
        source: str,
        job_id: str,
        stats: UpsertStats,
        symbols: list[str] | None = None,
    ) -> None:
        """Publish one `BarsIngested` per timeframe; `symbols` are clean's, when known."""
        one = _one_timeframe(clean)
        parts = (
            [((one,), clean)]
            if one is not None
            else clean.group_by("timeframe", maintain_order=True)
        )
        for (tf,), part in parts:
            span = part.select(lo=pl.col("ts").min(), hi=pl.col("ts").max()).row(0)
            self.bus.publish(
                BarsIngested(
                    occurred_at=self.clock.now(),
                    job_id=job_id,
                    source=source,
                    timeframe=str(tf),
                    symbols=symbols
                    if one is not None and symbols is not None
                    else _distinct(part["symbol"]),
                    rows_written=stats.written,
                    rows_unchanged=stats.unchanged,
                    first_ts=span[0],
                    last_ts=span[1],
                )
            )


def _one_timeframe(bars: pl.DataFrame) -> str | None:
    """Return the timeframe of a non-empty batch with one (non-null) timeframe, else None."""
    tf = pl.col("timeframe")
    if bars.is_empty() or not bars.select(tf.is_not_null().all() & (tf == tf.first()).all()).item():
        return None
    return str(bars["timeframe"][0])


def _distinct(column: pl.Series) -> list[str]:
    """Return the sorted distinct values of a column whose rows mostly come in runs.

    Only the first row of each run is hashed (a batch holds each symbol as a block).
    """
    if column.is_empty():
        return []
    heads = column.ne_missing(column.shift(1)).to_numpy()
    heads[0] = True
    return column.filter(pl.Series(heads)).unique().sort().to_list()


def _rule_counts(rejected: pl.DataFrame) -> dict[str, int]:
    counts = (
        rejected.select(pl.col("rule").str.split(","))
        .explode("rule")
        .group_by("rule")
        .len()
        .sort("rule")
    )
    return {str(r): int(n) for r, n in counts.iter_rows()}
