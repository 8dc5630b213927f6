"""The in-process runner: calls the pipeline stages in order, in the caller's thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from quantivista.bus.base import EventBus
from quantivista.clock import Clock
from quantivista.model.schema import FrameLike
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.ops.foreground import FOREGROUND
from quantivista.ops.metrics import SymbolGroups, observe_stored, stage
from quantivista.ops.tracing import span
from quantivista.pipeline.messages import Batch, BatchId, RawBatch, StoredBatch
from quantivista.pipeline.recent import RecentHistory
from quantivista.pipeline.stages import (
    Sinks,
    announce,
    announce_actions,
    coerce,
    history_for,
    mark_changed,
    normalize,
    store,
    store_actions,
    validate,
)
from quantivista.quality.validate import Validator
from quantivista.storage.contracts import ActionStore, RawStore

__all__ = ["InProcessRunner"]


@dataclass
class InProcessRunner:
    """Run batches through normalize -> validate -> store -> announce, losing nothing.

    `validator` is a callable so that the exchange calendar behind it loads on first use.
    """

    sinks: Sinks
    actions: ActionStore
    raw: RawStore
    bus: EventBus
    clock: Clock
    validator: Callable[[], Validator]
    timezone: Callable[[], str] = lambda: "America/New_York"  # the exchange's, for dates
    groups: SymbolGroups | None = None  # symbol groups of the freshness metrics

    def write(
        self,
        frame: FrameLike,
        *,
        source: str,
        batch_id: BatchId,
        timeframe: TimeframeLike | None = None,
        validator: Validator | None = None,
        release: bool = False,
        history: pl.DataFrame | None = None,
        on_bars: Callable[[pl.DataFrame], None] | None = None,
        on_validated: Callable[[pl.DataFrame], None] | None = None,
        recent: RecentHistory | None = None,
        actions: pl.DataFrame | None = None,
    ) -> StoredBatch:
        """Validate and store a frame of raw bars in the canonical schema.

        `validator` overrides the runner's for this batch (a quarantine release with some
        rules demoted to warnings); a `release` re-quarantines rows still held. `history`
        is the stored bars before the batch when the caller keeps them (a live stream),
        instead of reading them from the store; `on_bars(clean)` runs as soon as the bars
        are stored (see `stages.store`); `on_validated(clean)` as soon as they are validated,
        before the store (a live stream starts publishing them there). `recent` keeps the
        bars this writer stores: the history comes from it (not a store read) and what is
        stored goes into it (`pipeline.recent`). `actions`: the known corporate actions of
        the batch's symbols when the caller has them (default: read from the store).
        """
        with span("pipeline.write", source=source, job_id=batch_id.job_id), FOREGROUND.running():
            batch = coerce(frame, batch_id, source, self.clock.now(), timeframe)
            return self.process(
                batch,
                validator=validator,
                release=release,
                history=history,
                on_bars=on_bars,
                on_validated=on_validated,
                recent=recent,
                actions=actions,
            )

    def ingest(self, raw: RawBatch) -> StoredBatch | None:
        """Keep a provider batch's payloads and actions, then store its bars.

        Returns None when the batch has no bars (every symbol failed or was empty).
        """
        if raw.payloads:
            self.raw.save(raw.id.job_id, raw.payloads)
        fresh = store_actions(raw.actions, self.actions)
        if fresh.height:
            mark_changed(self.sinks.catalog, self.clock.now())
        announce_actions(fresh, _action_source(raw), self.bus, self.clock)
        if raw.bars.is_empty():
            return None
        symbols = raw.bars["symbol"].unique().to_list()
        known = self.actions.for_symbols(symbols)
        with stage("normalize"):
            batch = normalize(
                raw, known, self.clock.now(), timezone=self.timezone(), reference=self._raw_daily
            )
        return self.process(batch, actions=known)

    def _raw_daily(self, symbols: list[str], first: date, last: date) -> pl.DataFrame:
        """Return stored raw daily bars (what prices a later dividend for normalization)."""
        return self.sinks.bars.read(
            symbols,
            Timeframe.parse("1d"),
            datetime.combine(first, time(), UTC),
            datetime.combine(last + timedelta(days=1), time(), UTC),
        )

    def process(
        self,
        batch: Batch,
        *,
        validator: Validator | None = None,
        actions: pl.DataFrame | None = None,
        release: bool = False,
        history: pl.DataFrame | None = None,
        on_bars: Callable[[pl.DataFrame], None] | None = None,
        on_validated: Callable[[pl.DataFrame], None] | None = None,
        recent: RecentHistory | None = None,
    ) -> StoredBatch:
        """Validate, store and announce a canonical batch (`history`, `on_bars`,
        `on_validated`, `recent`: see `write`); background upkeep waits meanwhile
        (`ops.foreground`)."""
        with FOREGROUND.running():
            return self._process(batch, validator, actions, release, history, on_bars,
                                 on_validated, recent)  # fmt: skip

    def _process(
        self,
        batch: Batch,
        validator: Validator | None,
        actions: pl.DataFrame | None,
        release: bool,
        history: pl.DataFrame | None,
        on_bars: Callable[[pl.DataFrame], None] | None,
        on_validated: Callable[[pl.DataFrame], None] | None,
        recent: RecentHistory | None,
    ) -> StoredBatch:
        check = validator or self.validator()
        if actions is None and batch.bars.height:
            actions = self.actions.for_symbols(batch.bars["symbol"].unique().to_list())
        with stage("validate"):
            if history is None and recent is not None and batch.bars.height:
                history = recent.history(batch.bars)
            elif history is None:
                history = history_for(batch.bars, self.sinks.bars, check)
            validated = validate(batch, check, actions=actions, history=history)
        if on_validated is not None:
            on_validated(validated.clean)
        with stage("store"):
            stored = store(
                validated, self.sinks, batch.at, dedupe_quarantine=not release, on_bars=on_bars
            )
            if recent is not None:
                recent.add(stored)
        with stage("publish"):
            announce(stored, self.bus, self.clock)
        observe_stored(
            stored.source,
            written=stored.stats.written,
            unchanged=stored.stats.unchanged,
            quarantined=stored.quarantined,
            score=stored.report.quality_score,
            clean=stored.clean,
            now=self.clock.now(),
            groups=self.groups,
        )
        return stored


def _action_source(raw: RawBatch) -> str:
    if raw.actions.is_empty() or "provider" not in raw.actions.columns:
        return raw.source
    names = raw.actions["provider"].drop_nulls().unique().sort().to_list()
    return "+".join(names) or raw.source
