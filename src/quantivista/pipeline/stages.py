"""Pipeline stages as plain functions over typed batches.

    acquire -> normalize -> validate -> store -> announce

Each stage takes a batch and the parts it needs and returns the next batch; none keeps
state between calls. `runner.py` calls them in order in one process; a broker-backed
runner can connect the same functions through topics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol
from uuid import uuid4
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from quantivista.acquisition.router import Router
from quantivista.bus.base import EventBus
from quantivista.bus.events import ActionsIngested, BarsIngested, BarsQuarantined
from quantivista.clock import Clock
from quantivista.errors import QuantiVistaError
from quantivista.model.jobs import DataQualityReport, Severity
from quantivista.model.schema import (
    ACTION_POLARS_SCHEMA,
    FrameLike,
    coerce_bars_checked,
    empty_bars,
)
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.pipeline.messages import (
    Batch,
    BatchId,
    FetchFailure,
    RawBatch,
    StoredBatch,
    ValidatedBatch,
)
from quantivista.processing.normalize import to_raw_basis
from quantivista.providers.base import BarRequest, FetchResult, PriceBasis
from quantivista.quality.validate import Validator
from quantivista.storage.base import BarStore
from quantivista.storage.contracts import ActionStore, JobCatalog, QuarantineStore, ScoreStore

__all__ = [
    "EpochCache",
    "Progress",
    "Sinks",
    "acquire",
    "announce",
    "coerce",
    "data_epoch",
    "history_for",
    "history_lookback",
    "mark_changed",
    "normalize",
    "store",
    "store_actions",
    "validate",
]

Progress = Callable[[str, int, int], None]
"""Called as progress(symbol, done, total) after each symbol is fetched."""


class Refresher(Protocol):
    """Keeps derived bars (rollups) in step with changed base bars."""

    def refresh(self, changed: pl.DataFrame) -> object:
        """Recompute what `changed` affects."""
        ...


@dataclass(frozen=True, slots=True)
class Sinks:
    """The stores the store stage writes to."""

    bars: BarStore
    quarantine: QuarantineStore
    scores: ScoreStore
    catalog: JobCatalog
    rollup: Refresher | None = None


# -- acquire -------------------------------------------------------------------------------
def acquire(
    router: Router,
    symbols: Sequence[str],
    start: datetime,
    end: datetime,
    timeframe: Timeframe,
    batch_id: BatchId,
    clock: Clock,
    *,
    concurrency: int = 4,
    progress: Callable[[str], None] | None = None,
) -> RawBatch:
    """Fetch `symbols` over `[start, end)` through the router, several at a time.

    A symbol that fails on every provider becomes a `FetchFailure`; errors outside the
    platform's error tree (bugs) propagate.
    """

    def one(symbol: str) -> tuple[str, FetchResult | QuantiVistaError]:
        try:
            return symbol, router.fetch(BarRequest(symbol, timeframe, start, end))
        except QuantiVistaError as exc:
            return symbol, exc

    if concurrency <= 1 or len(symbols) == 1:
        results = [one(s) for s in symbols]
    else:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="qv-fetch") as pool:
            results = list(pool.map(one, symbols))
    capabilities = {p.name: p.capabilities for p in router.providers}
    frames, actions, payloads = [], [], []
    basis: dict[str, str] = {}
    conventions: dict[str, str] = {}
    failures: list[FetchFailure] = []
    empty: list[str] = []
    for symbol, outcome in results:  # one entry per symbol, not per bar
        if progress is not None:
            progress(symbol)
        if isinstance(outcome, QuantiVistaError):
            failures.append(FetchFailure(symbol, outcome))
            continue
        payloads.extend(outcome.raw)
        if not outcome.actions.is_empty():
            actions.append(outcome.actions)
        if outcome.bars.is_empty():
            empty.append(symbol)
            continue
        frames.append(outcome.bars)
        caps = capabilities.get(outcome.provider)
        if caps is not None:
            declared = outcome.metadata.get("price_basis") or caps.basis_for(timeframe)
            basis[symbol] = PriceBasis(declared).value
            conventions[symbol] = caps.dividend_convention
    return RawBatch(
        id=batch_id,
        timeframe=str(timeframe),
        bars=pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame(),
        actions=(
            pl.concat(actions, how="vertical_relaxed")
            if actions
            else pl.DataFrame(schema=ACTION_POLARS_SCHEMA)
        ),
        payloads=payloads,
        basis=basis,
        conventions=conventions,
        received_at=clock.now(),
        failures=failures,
        empty=empty,
        source=",".join(p.name for p in router.providers),
    )


# -- normalize -----------------------------------------------------------------------------
def coerce(
    frame: FrameLike,
    batch_id: BatchId,
    source: str,
    now: datetime,
    timeframe: TimeframeLike | None = None,
) -> Batch:
    """Turn a user's frame (raw prices in the canonical schema) into a batch.

    Rows whose symbol breaks the symbol rule are held for quarantine (`invalid_symbol`).
    """
    bars, problems = coerce_bars_checked(
        frame, timeframe=timeframe, provider=source, job_id=batch_id.job_id, ingested_at=now
    )
    bars, held = _hold_bad_symbols(bars, problems)
    return Batch(batch_id, bars, source, now, held=held)


def _hold_bad_symbols(
    bars: pl.DataFrame, problems: pl.Series | None
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Split off rows whose symbol is invalid, with the quarantine columns and the reason."""
    if problems is None:
        return bars, None
    bad = problems.is_not_null()
    held = bars.filter(bad).with_columns(
        rule=pl.lit("invalid_symbol"),
        severity=pl.lit(Severity.ERROR.value),
        reason=problems.filter(bad),
    )
    return bars.filter(~bad), held


def normalize(
    raw: RawBatch,
    known_actions: pl.DataFrame,
    now: datetime,
    *,
    timezone: str = "America/New_York",
    reference: Callable[[list[str], date, date], pl.DataFrame] | None = None,
) -> Batch:
    """Turn what providers sent into canonical bars with raw prices.

    Bars a vendor sent adjusted are turned back into traded prices with the actions
    whose ex-date had come on the day the answer was received (in the exchange's
    `timezone`): a vendor's adjusted history reflects only those. `known_actions` and the
    batch's own actions count; `reference(symbols, first, last)` returns stored raw daily
    bars, which price dividends whose ex-date lies after the batch and check the result:
    where stored raw closes overlap the batch, converted closes must agree with them (a
    vendor whose adjustment reflects other actions than those known is caught there).
    Rows that cannot be made raw, or disagree, are held for quarantine with the reason.
    """
    if raw.bars.is_empty():
        return Batch(raw.id, empty_bars(), raw.source, now)
    bars, problems = coerce_bars_checked(
        raw.bars,
        timeframe=raw.timeframe,
        provider=raw.source,
        job_id=raw.id.job_id,
        ingested_at=now,
    )
    bars, bad_symbols = _hold_bad_symbols(bars, problems)
    held: list[pl.DataFrame] = [] if bad_symbols is None else [bad_symbols]
    groups: dict[tuple[str, str], list[str]] = {}
    for symbol, basis in raw.basis.items():  # one entry per symbol
        if basis != PriceBasis.NONE.value:
            convention = raw.conventions.get(symbol, "crsp")
            groups.setdefault((basis, convention), []).append(symbol)
    if not groups:
        return Batch(raw.id, bars, raw.source, now, held=bad_symbols)
    day = (raw.received_at or now).astimezone(ZoneInfo(timezone)).date()
    actions = (
        pl.concat([known_actions, raw.actions], how="vertical_relaxed")
        if raw.actions.height
        else known_actions
    ).unique(["symbol", "action_type", "ex_date"], keep="first", maintain_order=True)
    adjusted = [s for symbols in groups.values() for s in symbols]
    parts = [bars.filter(~pl.col("symbol").is_in(adjusted))]
    converted = 0
    for (basis, convention), symbols in groups.items():
        part = bars.filter(pl.col("symbol").is_in(symbols))
        ref = None
        if reference is not None:
            first = part["ts"].min()
            assert isinstance(first, datetime)
            ref = reference(symbols, first.date(), day)
        out = to_raw_basis(
            part,
            basis,
            actions,
            as_of_day=day,
            dividend_convention=convention,  # type: ignore[arg-type]  # from capabilities
            reference=ref if basis == PriceBasis.SPLITS_AND_DIVIDENDS.value else None,
        )
        converted += out.converted
        unresolved = out.factors["unresolved"]
        if unresolved.any():
            held.append(
                _hold(
                    out.bars.filter(unresolved),
                    "unresolved_adjustment",
                    f"the vendor sent {basis}-adjusted prices and an action after this bar"
                    " cannot be undone (no stored close to price a dividend)",
                )
            )
        good = out.bars.filter(~unresolved)
        for symbol, deviation in _off_basis(good, ref).items():  # the vendor's basis differs
            held.append(
                _hold(
                    good.filter(pl.col("symbol") == symbol),
                    "basis_mismatch",
                    f"made raw, the vendor's {basis}-adjusted prices still differ from stored"
                    f" raw closes by {deviation:.3%} (median): its adjustment does not match"
                    " the known corporate actions",
                )
            )
            good = good.filter(pl.col("symbol") != symbol)
        parts.append(good)
    return Batch(
        raw.id,
        pl.concat(parts),
        raw.source,
        now,
        converted,
        pl.concat(held) if held else None,
    )


# a vendor's rounding and a raw source's scatter stay below 2e-4 (SPY: Stooq vs Lean); one
# missed quarterly dividend is 2e-3 or more
_BASIS_TOLERANCE = 1e-3


def _off_basis(converted: pl.DataFrame, reference: pl.DataFrame | None) -> dict[str, float]:
    """Return symbols whose converted closes stray from stored raw closes, by how much."""
    if reference is None or reference.is_empty() or converted.is_empty():
        return {}
    stored = reference.select("symbol", "ts", _raw="close")
    both = converted.select("symbol", "ts", "close").join(stored, on=["symbol", "ts"])
    if both.is_empty():
        return {}
    deviation = (
        both.group_by("symbol")
        .agg(dev=(pl.col("close") / pl.col("_raw") - 1.0).abs().median())
        .filter(pl.col("dev") > _BASIS_TOLERANCE)
    )
    return {str(s): float(d) for s, d in deviation.iter_rows()}


def _hold(rows: pl.DataFrame, rule: str, reason: str) -> pl.DataFrame:
    """Return rows normalization holds back, with the quarantine columns."""
    return rows.with_columns(
        rule=pl.lit(rule), severity=pl.lit(Severity.ERROR.value), reason=pl.lit(reason)
    )


# -- validate ------------------------------------------------------------------------------
def history_for(bars: pl.DataFrame, store: BarStore, validator: Validator) -> pl.DataFrame | None:
    """Return stored bars just before the batch: the warm-up of the rolling statistics."""
    if bars.is_empty() or one_timeframe(bars) is None:
        return None
    tf = Timeframe.parse(str(bars["timeframe"][0]))
    first = bars["ts"].min()
    assert isinstance(first, datetime)
    # a store that answers it without decoding history (the lake's tails) does so
    read = getattr(store, "recent", store.read)
    history = read(distinct(bars["symbol"]), tf, first - history_lookback(tf, validator), first)
    return history if history.height else None


def history_lookback(timeframe: Timeframe, validator: Validator) -> timedelta:
    """Return how far before a batch `history_for` reads stored bars: enough calendar time
    for the validator's rolling window (trading days are ~5/7 of days)."""
    span = timeframe.seconds * 3 * validator.settings.spike_window if timeframe.seconds else None
    return timedelta(seconds=span) if span else timedelta(days=45)


def validate(
    batch: Batch,
    validator: Validator,
    *,
    actions: pl.DataFrame | None,
    history: pl.DataFrame | None,
) -> ValidatedBatch:
    """Split a batch into clean and rejected rows, with scores and a quality report.

    Known corporate actions (`actions`) keep real splits from looking like spikes;
    `history` warms up the rolling statistics.
    """
    result = validator.validate(
        batch.bars, job_id=batch.id.job_id, actions=actions, history=history
    )
    rejected, report = result.rejected, result.report
    if batch.held is not None and batch.held.height:
        rejected = pl.concat([rejected, batch.held.select(rejected.columns)])
        report = _with_held(report, batch.held)
    names = batch.bars["symbol"]
    if batch.held is not None:
        names = pl.concat([names, batch.held["symbol"]])
    symbols = distinct(names) if names.len() else []
    return ValidatedBatch(
        batch.id,
        batch.source,
        result.clean,
        rejected,
        result.scores,
        report,
        symbols,
        result.decided if result.decided.height else None,
    )


def _with_held(report: DataQualityReport, held: pl.DataFrame) -> DataQualityReport:
    """Count rows normalization held back as rejected rows of the batch's report."""
    n = held.height
    total = report.total_records + n
    counts = dict(report.rule_counts)
    for rule in held["rule"].unique().to_list():
        counts[rule] = counts.get(rule, 0) + int((held["rule"] == rule).sum())
    return report.model_copy(
        update={
            "total_records": total,
            "invalid_records": report.invalid_records + n,
            "quality_score": report.quality_score * report.total_records / total,
            "rule_counts": counts,
        }
    )


# -- store ---------------------------------------------------------------------------------
_OVERLAP_ROWS = 100_000  # below this, a thread costs more than the overlap saves


def store(
    validated: ValidatedBatch,
    sinks: Sinks,
    at: datetime,
    *,
    dedupe_quarantine: bool = True,
    on_bars: Callable[[pl.DataFrame], None] | None = None,
) -> StoredBatch:
    """Store clean rows, quarantine rejected ones, keep scores and the report.

    Derived timeframes (rollups) follow their 1-minute bars. Idempotent: storing the same
    batch twice changes nothing the second time. `on_bars(clean)` is called as soon as the
    bars are stored and the data epoch moved, before the bookkeeping (scores, rollups,
    quarantine, report): a live stream publishes them there.
    """
    rows = validated.clean
    if validated.decided is not None:  # earlier bars whose pending spike is now decided
        rows = pl.concat([rows, validated.decided.select(rows.columns)], how="vertical_relaxed")
    marked = False
    if on_bars is not None:
        stats = sinks.bars.upsert(rows)
        if stats.written:
            mark_changed(sinks.catalog, at)
            marked = True
        on_bars(validated.clean)
        sinks.scores.add(validated.scores, at)
    elif rows.height >= _OVERLAP_ROWS:
        # the day scores are a separate store: kept on a thread while the bars are written
        with ThreadPoolExecutor(1, thread_name_prefix="qv-scores") as pool:
            scored = pool.submit(sinks.scores.add, validated.scores, at)
            stats = sinks.bars.upsert(rows)
            scored.result()
    else:
        sinks.scores.add(validated.scores, at)
        stats = sinks.bars.upsert(rows)
    if stats.written and sinks.rollup is not None:
        sinks.rollup.refresh(rows)
    quarantined = sinks.quarantine.add(
        validated.rejected, job_id=validated.id.job_id, at=at, dedupe=dedupe_quarantine
    )
    sinks.catalog.save_report(validated.report, at)
    if quarantined or (stats.written and not marked):
        mark_changed(sinks.catalog, at)
    # nothing rejected: the stored rows hold every symbol of the batch
    known = validated.symbols if validated.rejected.is_empty() else None
    return StoredBatch(
        validated.id,
        validated.source,
        validated.clean,
        stats,
        quarantined,
        _rule_counts(validated.rejected) if quarantined else {},
        validated.report,
        known,
        validated.decided,
    )


def store_actions(actions: pl.DataFrame, store: ActionStore) -> pl.DataFrame:
    """Upsert corporate actions; return the rows that were new or changed."""
    return store.upsert(actions) if actions.height else actions


DATA_EPOCH_KEY = "data_epoch"


def mark_changed(catalog: JobCatalog, at: datetime) -> None:
    """Replace the store's data epoch: caches keyed by it (in any process) miss from now on."""
    catalog.put_state(DATA_EPOCH_KEY, {"token": uuid4().hex, "at": at.isoformat()})


def data_epoch(catalog: JobCatalog) -> str:
    """Return the store's data epoch (changes with every write of bars, quarantine or actions)."""
    state = catalog.get_state(DATA_EPOCH_KEY)
    return str(state["token"]) if state else "empty"


# -- announce ------------------------------------------------------------------------------
def announce(stored: StoredBatch, bus: EventBus, clock: Clock) -> None:
    """Publish `BarsIngested` per timeframe of what changed, and `BarsQuarantined`."""
    if stored.stats.written:
        clean = stored.clean
        one = one_timeframe(clean)
        parts = (
            [((one,), clean)]
            if one is not None
            else clean.group_by("timeframe", maintain_order=True)
        )
        for (tf,), part in parts:
            span = part.select(lo=pl.col("ts").min(), hi=pl.col("ts").max()).row(0)
            symbols = (
                stored.symbols
                if one is not None and stored.symbols is not None
                else distinct(part["symbol"])
            )
            bus.publish(
                BarsIngested(
                    occurred_at=clock.now(),
                    job_id=stored.id.job_id,
                    source=stored.source,
                    timeframe=str(tf),
                    symbols=symbols,
                    rows_written=stored.stats.written,
                    rows_unchanged=stored.stats.unchanged,
                    first_ts=span[0],
                    last_ts=span[1],
                )
            )
    if stored.quarantined:
        bus.publish(
            BarsQuarantined(
                occurred_at=clock.now(),
                job_id=stored.id.job_id,
                source=stored.source,
                rows=stored.quarantined,
                rules=stored.rules,
            )
        )


def announce_actions(fresh: pl.DataFrame, source: str, bus: EventBus, clock: Clock) -> None:
    """Publish `ActionsIngested` for new or changed corporate actions."""
    if fresh.height:
        bus.publish(
            ActionsIngested(
                occurred_at=clock.now(),
                source=source,
                symbols=sorted(fresh["symbol"].unique().to_list()),
                rows=fresh.height,
            )
        )


# -- helpers -------------------------------------------------------------------------------
def one_timeframe(bars: pl.DataFrame) -> str | None:
    """Return the timeframe of a non-empty batch with one (non-null) timeframe, else None."""
    if bars.is_empty():
        return None
    # on the column, not a query: a micro-batch asks three times, a query costs ~0.25 ms
    column = bars["timeframe"]
    first = column.min()
    if column.null_count() or first is None or first != column.max():
        return None
    return str(first)


def distinct(column: pl.Series) -> list[str]:
    """Return the sorted distinct values of a column whose rows mostly come in runs.

    Only the first row of each run is hashed (a batch holds each symbol as a block).
    """
    if column.is_empty():
        return []
    n = column.len()
    if column.dtype == pl.String and not column.has_nulls() and column.is_sorted():
        # sorted (a stream's batch): the run heads are the distinct values, in order
        heads = np.ones(n, dtype=bool)
        heads[1:] = (column.slice(1) != column.slice(0, n - 1)).to_numpy()
        return (column if heads.all() else column.filter(pl.Series(heads))).to_list()
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


class EpochCache:
    """The data epoch, read at most every `ttl_s`: a write in another process shows within it."""

    def __init__(self, read: Callable[[], str], ttl_s: float = 0.5) -> None:
        self._read = read
        self.ttl_s = ttl_s
        self._seen: tuple[float, str] | None = None

    def __call__(self) -> str:
        now = time.monotonic()
        seen = self._seen
        if seen is None or now - seen[0] > self.ttl_s:
            seen = (now, self._read())
            self._seen = seen
        return seen[1]
