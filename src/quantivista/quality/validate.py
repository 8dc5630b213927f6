"""Run the rules over a batch: split it into stored rows and quarantined rows, and report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Final

import numpy as np
import polars as pl

from quantivista.config import IntradaySettings, QualitySettings
from quantivista.model.flags import QualityFlag
from quantivista.model.jobs import DataQualityReport, Severity, ValidationIssue
from quantivista.model.schema import (
    BAR_COLUMNS,
    BAR_KEY,
    BAR_POLARS_SCHEMA,
    BAR_VALUE_COLUMNS,
    SCORE_SCHEMA,
)
from quantivista.model.timeframe import Timeframe
from quantivista.quality.history import Merged, merge_history
from quantivista.quality.intraday import bad_print_marks, with_bad_prints
from quantivista.quality.rules import DEFAULT_RULES, SERIES_COLUMNS, Rule
from quantivista.quality.series import series_columns, series_context, series_flags
from quantivista.quality.sessions import in_hours, session_closes, session_marks
from quantivista.reference.calendars import TradingCalendar

__all__ = ["SCORE_SCHEMA", "ValidationResult", "Validator", "batch_score", "day_scores", "profile"]

MAX_ISSUES_PER_RULE = 50
# the frame path (joins, concats and sorts of Polars frames) also for canonical batches:
# the reference the tests hold the numpy path of those batches to
_FRAME_PATH = False
# arrival order says nothing about the bar itself: it does not lower the score
_SCORED_BITS = 0xFFFFFFFF & ~int(QualityFlag.OUT_OF_ORDER)
_SOFT_WEIGHT = 0.5  # a flagged row counts half: stored, but worth a look


def batch_score(total: int, rejected: int, flagged: int, missing: int) -> float:
    """Return the quality score of a batch in [0, 1]: clean rows over rows plus missing bars.

    Rejected rows and missing bars count 0, flagged rows count half.
    """
    denominator = total + missing
    if denominator == 0:
        return 1.0
    good = total - rejected - _SOFT_WEIGHT * flagged
    return min(1.0, max(0.0, good / denominator))


def _flag_expr(rules: list[Rule], hits: list[pl.Expr]) -> pl.Expr:
    """OR the flag bits of the rules whose boolean is true (null counts as false)."""
    if not rules:
        return pl.lit(0, pl.UInt32)
    zero = pl.lit(0, pl.UInt32)
    bits = [
        pl.when(h).then(pl.lit(int(r.flag), pl.UInt32)).otherwise(zero)
        for r, h in zip(rules, hits, strict=True)
    ]
    # rules with distinct bits add up to their OR; shared bits need the OR
    distinct = len({int(r.flag) for r in rules}) == len(rules)
    if distinct:
        return pl.sum_horizontal(bits).cast(pl.UInt32)
    return pl.reduce(lambda a, b: a | b, bits).cast(pl.UInt32)


@dataclass(frozen=True, slots=True)
class _Marks:
    """What the arrival-order pass learned: one non-null timeframe in the batch, and
    whether a row shares its key with the row before (None: not known, after a sort)."""

    one_timeframe: bool
    repeats: bool | None


def _sorted(bars: pl.DataFrame) -> pl.DataFrame:
    """`_arranged` without its marks."""
    return _arranged(bars)[0]


# queries of this module collect in memory, as eager frame methods do: the engine Polars
# picks by itself (streaming) costs twice the instructions on a micro-batch's frames
_ENGINE: Final = "in-memory"


def _arranged(bars: pl.DataFrame) -> tuple[pl.DataFrame, _Marks]:
    """Return `bars` with each series in ts order, with `_out_of_order` and `_new` marks.

    A row is out of order when an earlier row of its series (in arrival order) has a later
    ts. Data that arrives with each (symbol, timeframe) series as one block in ts order
    (sorted, or in provider order) skips both the group pass and the sort: equal keys are
    then neighbours, which is all the duplicate and series checks need. The series marks
    of the arrival order decide that (the test of `series_in_blocks(strict=False)`), in
    one query with the other facts of the batch.
    """
    sym, tf, ts = pl.col("symbol"), pl.col("timeframe"), pl.col("ts")
    new = (~((sym == sym.shift(1)) & (tf == tf.shift(1)))).fill_null(True)
    facts = (
        bars.lazy()
        .select(sym, tf, ts, new=new)
        .select(
            "new",
            blocks=(pl.col("new") | (ts >= ts.shift(1))).all()
            & ~pl.struct(sym, tf).filter(pl.col("new")).is_duplicated().any(),
            one_tf=tf.is_not_null().all() & (tf == tf.first()).all(),
            repeats=(~pl.col("new") & (ts == ts.shift(1))).any(),
        )
        .collect(engine=_ENGINE)
    )
    one_tf = bool(facts["one_tf"][0]) if facts.height else False
    if not facts.height or facts["blocks"][0]:
        marks = _Marks(one_tf, bool(facts["repeats"][0]) if facts.height else False)
        return bars.hstack(
            [
                pl.Series("_out_of_order", np.zeros(bars.height, dtype=bool)),
                facts["new"].alias("_new"),
            ]
        ), marks
    late = (ts < ts.cum_max().shift(1)).fill_null(False).over("symbol", "timeframe")
    df = bars.with_columns(_out_of_order=late).sort(list(BAR_KEY), maintain_order=True)
    same = (sym == sym.shift(1)) & (tf == tf.shift(1))
    return df.with_columns(_new=(~same).fill_null(True)), _Marks(one_tf, None)


def _by_key(df: pl.DataFrame) -> pl.DataFrame:
    """A frame of `_sorted` with its series in (symbol, timeframe) order, new `_new` marks."""
    sym, tf = pl.col("symbol"), pl.col("timeframe")
    return df.sort("symbol", "timeframe", "ts", maintain_order=True).with_columns(
        _new=(~((sym == sym.shift(1)) & (tf == tf.shift(1)))).fill_null(True)
    )


_DAY_US = 86_400_000_000


def _daily_marks(ts: pl.Series, sessions: pl.Series) -> tuple[pl.Series, pl.Series] | None:
    """Return `_aligned` (00:00 UTC) and `_is_session` of daily bars, or None to use exprs.

    Day numbers index a table of the sessions: a gather instead of hashing every row's
    date. Only for the canonical null-free UTC microsecond timestamps.
    """
    if ts.dtype != pl.Datetime("us", "UTC") or ts.null_count() or ts.is_empty():
        return None
    us = ts.to_physical().to_numpy()
    day = us // _DAY_US
    first, last = int(day.min()), int(day.max())
    known = sessions.cast(pl.Int32).to_numpy().astype(np.int64)
    known = known[(known >= first) & (known <= last)]
    table = np.zeros(last - first + 1, dtype=bool)
    table[known - first] = True
    return pl.Series(day * _DAY_US == us), pl.Series(table[day - first])


_PROFILE_THREAD_ROWS = 100_000


def _profile_soon(bars: pl.DataFrame, shape: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """Start the profile of a batch; return the call that waits for it.

    It needs nothing but the input, so a big batch's profile runs on a thread while the
    rules run (polars releases the GIL); a small one is done at once.
    """
    if bars.height < _PROFILE_THREAD_ROWS:
        done = profile(bars, **shape)
        return lambda: done
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(profile, bars, **shape)
    pool.shutdown(wait=False)
    return future.result


def _counts(checked: pl.DataFrame, rules: list[Rule]) -> dict[str, int]:
    """How many rows each rule flags (one select)."""
    if not rules:
        return {}
    return {r.name: int(checked[r.name].sum()) for r in rules}


def _single_timeframe(df: pl.DataFrame, known: bool = False) -> bool:
    """Say whether every row has the first row's timeframe (cheaper than n_unique);
    `known`: the caller knows it does."""
    if known:
        return True
    tf = pl.col("timeframe")
    return bool(df.select((tf == tf.first()).all()).item())


def _known_shape(checked: pl.DataFrame, one_timeframe: bool = False) -> dict[str, Any]:
    """Symbol count and timeframe of a sorted one-timeframe batch, from its series marks."""
    if checked.is_empty() or "_new" not in checked.columns:
        return {}
    if not _single_timeframe(checked, one_timeframe):
        return {}
    return {"symbols": int(checked["_new"].sum()), "timeframes": [str(checked["timeframe"][0])]}


def _dedupe(df: pl.DataFrame, repeats: bool | None = None) -> tuple[pl.DataFrame, int]:
    """Drop exact repeats of a row (counted) and mark keys with different bars as conflicts.

    Works on the sorted frame: equal keys are neighbours, so a shifted comparison finds
    them; the costlier value comparison runs only on the rows that share a key.
    """
    if repeats is False:  # known: no key repeats
        return df.hstack([pl.Series("_dup_conflict", np.zeros(df.height, dtype=bool))]), 0
    same_key = ~pl.col("_new") & (pl.col("ts") == pl.col("ts").shift(1)).fill_null(False)
    marks = df.select(same_key.alias("k"))["k"]
    if not marks.any():
        return df.with_columns(_dup_conflict=pl.lit(False)), 0
    involved = marks | marks.shift(-1, fill_value=False)
    df = df.with_row_index("_i")
    sub = df.filter(involved)
    first = sub.select(pl.struct([*BAR_KEY, *BAR_VALUE_COLUMNS]).is_first_distinct()).to_series()
    drop = sub.filter(~first)["_i"]
    conflicts = sub.filter(first).filter(pl.len().over(list(BAR_KEY)) > 1)["_i"]
    out = (
        df.filter(~pl.col("_i").is_in(drop.implode()))
        .with_columns(_dup_conflict=pl.col("_i").is_in(conflicts.implode()))
        .drop("_i")
    )
    return out, drop.len()


def _series_with_history(
    checked: pl.DataFrame,
    history: pl.DataFrame,
    actions: pl.DataFrame | None,
    settings: QualitySettings,
    *,
    gap: bool,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Run the series context over stored history + batch, and keep the batch rows.

    Also returns the stored bars whose pending spike the batch decides (canonical columns,
    new `quality_flags`): the next bar confirms it as a spike or clears it.
    """
    first = checked.group_by("symbol", "timeframe").agg(_first=pl.col("ts").min())
    hist = (
        history.join(first, on=["symbol", "timeframe"])
        .filter(pl.col("ts") < pl.col("_first"))
        .select(BAR_COLUMNS)
        .with_columns(_valid=pl.lit(True), _hist=pl.lit(True))
    )
    if hist.is_empty():
        return series_context(checked, actions, settings, gap=gap), _no_bars()
    batch = checked.with_columns(_hist=pl.lit(False), _batch_new=pl.col("_new"))
    both = pl.concat([hist, batch], how="diagonal_relaxed").sort(
        "symbol", "timeframe", "ts", maintain_order=True
    )
    sym, tf = pl.col("symbol"), pl.col("timeframe")
    both = both.with_columns(_new=(~((sym == sym.shift(1)) & (tf == tf.shift(1)))).fill_null(True))
    both = series_context(both, actions, settings, gap=gap)
    out = both.filter(~pl.col("_hist"))
    # the batch keeps its own series starts (the spans of the missing-bar check)
    out = out.with_columns(_new=pl.col("_batch_new")).drop("_hist", "_batch_new")
    return out, _decided(both.filter(pl.col("_hist")), checked)


_PENDING = int(QualityFlag.SPIKE_PENDING)


def _f64(df: pl.DataFrame, name: str) -> np.ndarray:
    col = df[name]
    return (col.fill_null(np.nan) if col.null_count() else col).to_numpy()


def _recent(
    history: pl.DataFrame, checked: pl.DataFrame, rows: int, tail: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The history the batch's results depend on: per series, the last `rows` stored bars
    before its first batch bar, and `rows` before its oldest pending spike (the batch
    decides it). Within a series the rows are in (ts, arrival) order, the order the
    series checks sort them into; series are not in symbol order. Also returns the
    last `tail` (<= `rows`) bars of each series: all the bad-print check reads.

    The stream passes its last hour of every symbol (3 x the rolling window), in arrival
    order: the rest would only be sorted and scanned to be thrown away. The cut is found
    on three integer columns (a numpy sort), then only the kept rows are gathered.
    """
    first = checked.group_by("symbol", "timeframe").agg(_first=pl.col("ts").min())
    keys = (
        history.select("symbol", "timeframe", "ts", pl.col("quality_flags").fill_null(0))
        .with_row_index("_r")
        .join(first.with_row_index("_g"), on=["symbol", "timeframe"])
        .filter(pl.col("ts") < pl.col("_first"))
    )
    n = keys.height
    r = keys["_r"].to_numpy()
    order = np.lexsort((r, keys["ts"].to_physical().to_numpy(), keys["_g"].to_numpy()))
    r = r[order]
    bars = history.select(BAR_COLUMNS)
    if n > tail:
        g = keys["_g"].to_numpy()[order]
        new = np.ones(n, dtype=bool)
        new[1:] = g[1:] != g[:-1]
        starts = np.flatnonzero(new)
        sizes = np.diff(np.append(starts, n))
        at = np.arange(n)
        pending = (keys["quality_flags"].to_numpy()[order] & _PENDING) != 0
        oldest = np.minimum.reduceat(np.where(pending, at, n), starts)
        # rows after the cut: the last `rows` of the series and `rows` before a pending spike
        cut = np.minimum(starts + sizes - rows, oldest - rows)
        last = np.repeat(starts + sizes - tail, sizes)
        return bars[r[at >= np.repeat(cut, sizes)]], bars[r[at >= last]]
    return bars[r], bars[r]


def _decided_rows(
    history: pl.DataFrame, merged: Merged, flags: dict[str, np.ndarray], checked: pl.DataFrame
) -> pl.DataFrame | None:
    """`_decided` from the merged positions: only the pending bars that changed are
    gathered from `history`."""
    stored = history["quality_flags"]
    before = (stored.fill_null(0) if stored.null_count() else stored).to_numpy()[merged.rows]
    pending = (before & _PENDING) != 0
    if not pending.any():
        return None
    at = merged.hist_at
    after = (
        (before & (0xFFFFFFFF ^ _PENDING))
        | np.where(flags["_spike"][at], int(QualityFlag.SPIKE), 0)
        | np.where(flags["_spike_pending"][at], _PENDING, 0)
    ).astype(np.uint32)
    changed = pending & (after != before)
    if not changed.any():
        return None
    rows: pl.DataFrame = history[merged.rows[changed]].select(BAR_COLUMNS)
    when = checked["ingested_at"].max() if "ingested_at" in checked.columns else None
    job = checked["job_id"].drop_nulls().first() if "job_id" in checked.columns else None
    return rows.with_columns(
        quality_flags=pl.Series(after[changed], dtype=pl.UInt32),
        ingested_at=pl.lit(when, dtype=BAR_POLARS_SCHEMA["ingested_at"]),
        job_id=pl.lit(job, dtype=pl.String),
    )


def _decided(hist: pl.DataFrame, checked: pl.DataFrame) -> pl.DataFrame:
    """Stored bars with a pending spike whose flags the batch's bars now decide.

    Confirmed: the pending bit becomes SPIKE; cleared: it is dropped; still without a next
    valid bar: unchanged. A decided bar is a new version of the stored bar (its flags
    changed), known from the batch's knowledge time.
    """
    pending = hist.filter((pl.col("quality_flags") & _PENDING) != 0)
    if pending.is_empty():
        return _no_bars()
    flags = (
        (pl.col("quality_flags") & (0xFFFFFFFF ^ _PENDING))
        | pl.when(pl.col("_spike")).then(int(QualityFlag.SPIKE)).otherwise(0)
        | pl.when(pl.col("_spike_pending")).then(_PENDING).otherwise(0)
    ).cast(pl.UInt32)
    at = checked["ingested_at"].max() if "ingested_at" in checked.columns else None
    job = checked["job_id"].drop_nulls().first() if "job_id" in checked.columns else None
    return (
        pending.with_columns(_flags=flags)
        .filter(pl.col("_flags") != pl.col("quality_flags"))
        .with_columns(
            quality_flags=pl.col("_flags"),
            ingested_at=pl.lit(at, dtype=BAR_POLARS_SCHEMA["ingested_at"]),
            job_id=pl.lit(job, dtype=pl.String),
        )
        .select(BAR_COLUMNS)
    )


def _spans(part: pl.DataFrame) -> pl.DataFrame:
    """Return (symbol, first, last, n) per series; sorted frames use their `_new` marks."""
    if "_new" not in part.columns:
        return part.group_by("symbol").agg(
            first=pl.col("ts").min(), last=pl.col("ts").max(), n=pl.col("ts").n_unique()
        )
    new = part["_new"].to_numpy()
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], part.height) - 1
    # rows sharing a key with the row before are one bar, not two (after dedupe: conflicts)
    ts = part["ts"]
    ts_us = ts.to_physical().to_numpy() if not ts.null_count() else ts.dt.epoch("us").to_numpy()
    again = np.flatnonzero(ts_us[1:] == ts_us[:-1]) + 1
    again = again[~new[again]]
    repeats = np.bincount(np.searchsorted(starts, again, side="right") - 1, minlength=starts.size)
    return pl.DataFrame(
        {
            "symbol": part["symbol"].gather(starts),
            "first": ts.gather(starts),
            "last": ts.gather(ends),
            "n": ends - starts + 1 - repeats,
        }
    )


def day_scores(checked: pl.DataFrame, missing: pl.DataFrame, job_id: str) -> pl.DataFrame:
    """Return a quality score per (symbol, timeframe, session date) of a checked batch."""
    return _day_scores(checked, missing, job_id)


def _day_scores(
    checked: pl.DataFrame,
    missing: pl.DataFrame,
    job_id: str,
    timeframes: list[str] | None = None,
    *,
    any_rejected: bool = True,
    any_flagged: bool = True,
) -> pl.DataFrame:
    """Return `day_scores`, told the timeframes and whether any row is rejected or flagged.

    When no row is, those counts are constants rather than columns to compute.
    """
    if checked.is_empty():
        return pl.DataFrame(schema=SCORE_SCHEMA)
    rejected = pl.col("_rejected").cast(pl.UInt32)
    flagged = (~pl.col("_rejected") & ((pl.col("quality_flags") & _SCORED_BITS) != 0)).cast(
        pl.UInt32
    )
    if timeframes is None:
        timeframes = checked["timeframe"].unique().to_list()
    one_per_day = set(timeframes) <= {"1d", "1w", "1mo"}
    if one_per_day and missing.is_empty():  # the common daily case: one select, no grouping
        zero = pl.lit(0, pl.UInt32)
        if not any_rejected:
            flagged = ((pl.col("quality_flags") & _SCORED_BITS) != 0).cast(pl.UInt32)
        score = pl.lit(1.0)
        if any_rejected:
            score = score - rejected.cast(pl.Float64)
        if any_flagged:
            score = score - _SOFT_WEIGHT * flagged.cast(pl.Float64)
        return checked.select(
            "symbol",
            "timeframe",
            date=pl.col("ts").dt.date(),
            job_id=pl.lit(job_id),
            rows=pl.lit(1, pl.UInt32),
            rejected=rejected if any_rejected else zero,
            flagged=flagged if any_flagged else zero,
            missing=zero,
            score=score,
        )
    # one query: the steps below are lazy
    rows = checked.lazy().select(
        "symbol", "timeframe", date=pl.col("ts").dt.date(), rejected=rejected, flagged=flagged
    )
    if one_per_day:
        per_day = rows.with_columns(rows=pl.lit(1, pl.UInt32))
    else:
        per_day = rows.group_by("symbol", "timeframe", "date").agg(
            rows=pl.len().cast(pl.UInt32),
            rejected=pl.col("rejected").sum(),
            flagged=pl.col("flagged").sum(),
        )
    good = pl.col("rows") - pl.col("rejected") - _SOFT_WEIGHT * pl.col("flagged")
    if missing.is_empty():
        out = per_day.with_columns(
            missing=pl.lit(0, pl.UInt32),
            job_id=pl.lit(job_id),
            score=(good / pl.col("rows")).clip(0.0, 1.0),
        )
        return out.select(SCORE_SCHEMA.names()).cast(SCORE_SCHEMA).collect(engine=_ENGINE)
    gaps = (
        missing.join(checked.select("symbol", "timeframe").unique(), on="symbol")
        .group_by("symbol", "timeframe", date=pl.col("ts").dt.date())
        .agg(missing=pl.len().cast(pl.UInt32))
    )
    good = pl.col("rows") - pl.col("rejected") - _SOFT_WEIGHT * pl.col("flagged")
    out = (
        per_day.join(gaps.lazy(), on=["symbol", "timeframe", "date"], how="full", coalesce=True)
        .with_columns(pl.col("rows", "rejected", "flagged", "missing").fill_null(0))
        .with_columns(
            job_id=pl.lit(job_id),
            score=(good / (pl.col("rows") + pl.col("missing"))).clip(0.0, 1.0),
        )
    )
    return out.select(SCORE_SCHEMA.names()).cast(SCORE_SCHEMA).collect(engine=_ENGINE)


@dataclass(slots=True)
class ValidationResult:
    """The outcome of validating one batch."""

    clean: pl.DataFrame  # canonical schema, quality_flags set for soft findings
    rejected: pl.DataFrame  # canonical schema plus rule, severity, reason
    report: DataQualityReport
    exact_duplicates: int = 0
    issues: list[ValidationIssue] = field(default_factory=list)
    scores: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=SCORE_SCHEMA))
    # stored bars (before the batch) whose pending spike the batch confirmed or cleared:
    # new versions to store with the clean rows
    decided: pl.DataFrame = field(default_factory=lambda: _no_bars())


def _no_bars() -> pl.DataFrame:
    return pl.DataFrame(schema=BAR_POLARS_SCHEMA)


class Validator:
    """Validate canonical bar batches against a set of rules and an exchange calendar.

    With `calendar=None` the calendar rules (sessions, alignment to session grids,
    missing sessions) are skipped, for instruments that trade around the clock.
    Rules run in two phases: row and calendar rules first (their hard errors mark rows
    invalid), then the series rules (spikes, stale runs, split jumps, gaps), which look
    along each series over the valid rows only.
    """

    def __init__(
        self,
        calendar: TradingCalendar | None,
        rules: tuple[Rule, ...] = DEFAULT_RULES,
        settings: QualitySettings | None = None,
        intraday: IntradaySettings | None = None,
    ) -> None:
        self.calendar = calendar
        self.rules = rules
        self.settings = settings or QualitySettings()
        self.intraday = intraday or IntradaySettings()

    def with_rules(self, rules: tuple[Rule, ...]) -> Validator:
        """Return a validator with the same calendar and settings but other rules."""
        return Validator(self.calendar, rules, self.settings, self.intraday)

    def demoted(self, names: Sequence[str]) -> Validator:
        """Return a validator where the named rules only flag rows (severity WARNING)."""
        wanted = set(names)
        return self.with_rules(
            tuple(
                replace(r, severity=Severity.WARNING) if r.name in wanted else r for r in self.rules
            )
        )

    def flags(self, bars: pl.DataFrame) -> pl.Series:
        """Return the `quality_flags` bits of the rules that need no context (one select)."""
        rules = [r for r in self.rules if not r.needs]
        hits = [r.violation() for r in rules]
        return bars.select(_flag_expr(rules, hits).alias("quality_flags")).to_series()

    def validate(
        self,
        bars: pl.DataFrame,
        *,
        job_id: str,
        actions: pl.DataFrame | None = None,
        history: pl.DataFrame | None = None,
    ) -> ValidationResult:
        """Check `bars` (canonical schema) and return clean rows, rejected rows and a report.

        `actions` (canonical action schema) lets the series rules tell a real split or
        dividend from a spike; without it every unexplained split-sized jump is flagged.
        `history` (already stored bars before the batch) gives the rolling statistics
        their warm-up, so a small incremental batch is checked like a long one; history
        rows are context only: they are neither checked nor returned.
        """
        total = bars.height
        # one chunk per column: on a frame whose columns are chunked differently (a concat
        # of per-symbol frames) every later select would first copy the whole frame
        ordered, marks = _arranged(bars.rechunk())
        one_tf = marks.one_timeframe
        shape = _known_shape(ordered, one_tf)  # dedupe keeps every series' first row
        profiled = _profile_soon(bars, shape)
        deduped, exact_dupes = _dedupe(ordered, marks.repeats)
        ctx = self._with_context(deduped, one_tf)
        first = [r for r in self.rules if all(n in ctx.columns for n in r.needs)]
        checked = ctx.with_columns([r.expr() for r in first])
        counts = _counts(checked, first)
        later = [
            r for r in self.rules if r not in first and all(n in SERIES_COLUMNS for n in r.needs)
        ]
        decided: pl.DataFrame | None = None
        if later:
            # an error rule that never fired invalidates no row
            fired = [r for r in first if counts[r.name]]
            first_errors = [r.name for r in fired if r.severity is Severity.ERROR]
            valid = np.ones(checked.height, dtype=bool)
            for name in first_errors:  # rule columns are null-free booleans
                valid &= ~checked[name].to_numpy()
            checked = checked.hstack([pl.Series("_valid", valid)])
            gap = any("_gap_s" in r.needs for r in later)  # only a business rule reads it
            prints = any("_bad_print" in r.needs for r in later)
            rows, tail = self._history_rows(), self._neighbour_rows()
            tail = min(tail, rows)
            merged = None if _FRAME_PATH else merge_history(history, checked, rows, tail, one_tf)
            if merged is not None and merged.rows.size and not merged.keys_sorted:
                # with stored bars the results come in (symbol, timeframe, ts) order
                checked = _by_key(checked)
                merged = merge_history(history, checked, rows, tail, one_tf)
            if merged is not None:
                checked, decided = self._along_series(
                    checked, merged, history, actions, gap=gap, prints=prints
                )
            else:  # null keys or times: the frame path
                checked, decided = self._along_series_frames(
                    checked, history, actions, gap=gap, prints=prints
                )
            checked = checked.with_columns([r.expr() for r in later])
            counts |= _counts(checked, later)
        rules = first + later
        rule_counts = {r.name: counts[r.name] for r in rules if counts[r.name]}
        # a rule that never fired adds no flag bit and rejects nothing: the usual clean
        # batch skips both passes
        hit = [r for r in rules if r.name in rule_counts]
        hit_errors = [r for r in hit if r.severity is Severity.ERROR]
        checked = checked.with_columns(
            quality_flags=pl.col("quality_flags") | _flag_expr(hit, [pl.col(r.name) for r in hit])
            if hit
            else pl.col("quality_flags"),
            _rejected=pl.any_horizontal([pl.col(r.name) for r in hit_errors])
            if hit_errors
            else pl.lit(False),
        )
        n_rejected = sum(rule_counts[r.name] for r in hit_errors)  # an upper bound: 0 is exact
        if n_rejected:
            n_rejected = int(checked["_rejected"].sum())
        flags = checked["quality_flags"]
        scored = (flags.fill_null(0) if flags.null_count() else flags).to_numpy() & _SCORED_BITS
        soft = int(np.count_nonzero((scored != 0) & ~checked["_rejected"].to_numpy()))
        if exact_dupes:
            rule_counts["duplicate"] = exact_dupes
        if decided is not None and decided.height:
            confirmed = int(((decided["quality_flags"] & int(QualityFlag.SPIKE)) != 0).sum())
            if confirmed:
                rule_counts["spike_confirmed"] = confirmed
            if decided.height - confirmed:
                rule_counts["spike_cleared"] = decided.height - confirmed

        errors = [r for r in rules if r.severity is Severity.ERROR]
        rejected = self._rejected_rows(checked if n_rejected else checked.clear(), errors)
        # the usual all-good batch needs no filtered copy
        clean = (
            checked.filter(~pl.col("_rejected")).select(BAR_COLUMNS)
            if n_rejected
            else checked[list(BAR_COLUMNS)]
        )
        issues = self._row_issues(checked, hit, self.settings.max_issues_per_rule)
        # a rejected bar arrived (it is in quarantine): only bars that never came are missing
        missing = self._missing_bars(checked, one_tf)
        if missing.height:
            rule_counts["missing_bar"] = missing.height
            issues.extend(
                ValidationIssue(
                    symbol=s,
                    ts=t,
                    rule="missing_bar",
                    severity=Severity.WARNING,
                    message="the calendar expects a bar here but none arrived",
                )
                for s, t in missing.head(self.settings.max_issues_per_rule * 4).iter_rows()
            )
        score = batch_score(total, rejected.height, soft, missing.height)
        report = DataQualityReport(
            job_id=job_id,
            total_records=total,
            valid_records=clean.height + exact_dupes,
            invalid_records=rejected.height,
            quality_score=score,
            validation_errors=issues,
            rule_counts=rule_counts,
            issue_count=sum(rule_counts.values()),
            data_profiling=profiled(),
        )
        scores = _day_scores(
            checked,
            missing,
            job_id,
            shape.get("timeframes"),
            any_rejected=n_rejected > 0,
            any_flagged=soft > 0,
        )
        return ValidationResult(
            clean,
            rejected,
            report,
            exact_dupes,
            issues,
            scores,
            decided if decided is not None else _no_bars(),
        )

    def _along_series_frames(
        self,
        checked: pl.DataFrame,
        history: pl.DataFrame | None,
        actions: pl.DataFrame | None,
        *,
        gap: bool,
        prints: bool,
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """The series and bad-print context of batches with null keys or times, on frames."""
        recent = neighbours = decided = None
        if history is not None and history.height and checked.height:
            rows, tail = self._history_rows(), self._neighbour_rows()
            recent, neighbours = _recent(history, checked, rows, min(tail, rows))
        if recent is not None and recent.height:
            checked, decided = _series_with_history(
                checked, recent, actions, self.settings, gap=gap
            )
        else:
            checked = series_context(checked, actions, self.settings, gap=gap)
        if prints:
            checked = self._bad_prints(checked, neighbours)
        return checked, decided

    def _along_series(
        self,
        checked: pl.DataFrame,
        merged: Merged,
        history: pl.DataFrame | None,
        actions: pl.DataFrame | None,
        *,
        gap: bool,
        prints: bool,
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """Add the series flags (and `_gap_s`, `_bad_print` when asked) to `checked` from
        the merged stored + batch rows; return it with the stored bars the batch decides.

        Numpy columns gathered by `merged`'s positions: no merged frame is built.
        """
        batch = series_columns(checked)
        values = ("open", "high", "low", "close", "volume")
        if merged.rows.size:
            assert history is not None
            hist = {k: _f64(history, k)[merged.rows] for k in values}
            hist_ts = history["ts"].to_numpy().view(np.int64)[merged.rows]
        else:
            hist = {k: np.zeros(0) for k in values}
            hist_ts = np.zeros(0, dtype=np.int64)
        cols = {k: merged.take(hist[k], batch[k]) for k in values}
        cols["valid"] = merged.take(np.ones(merged.rows.size, dtype=bool), batch["valid"])
        cols["new"] = merged.new
        ts = merged.take(hist_ts, checked["ts"].to_numpy().view(np.int64))
        starts = np.flatnonzero(batch["new"])
        series = merged.take(merged.series, np.cumsum(batch["new"]) - 1)

        def keys() -> pl.DataFrame:
            return pl.DataFrame(
                {
                    "symbol": checked["symbol"].gather(starts).gather(series),
                    "ts": pl.Series(ts).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
                }
            )

        flags = series_flags(cols, keys, actions, self.settings)
        alone = not merged.rows.size  # merged rows are the batch's rows
        at = merged.batch_at
        added = [pl.Series(k, v if alone else v[at]) for k, v in flags.items()]
        if gap:  # seconds since the previous bar of the series (floor division)
            step = np.zeros(merged.size, dtype=np.float64)
            step[1:] = (ts[1:] - ts[:-1]) // 1_000_000
            step[merged.new] = np.nan
            gaps = step if alone else step[at]
            added.append(pl.Series("_gap_s", gaps, nan_to_null=True).cast(pl.Int64))
        if prints:
            added.append(pl.Series("_bad_print", self._prints(checked, merged, cols, ts)))
        decided = None
        if merged.rows.size:
            assert history is not None
            decided = _decided_rows(history, merged, flags, checked)
        return checked.hstack(added), decided

    def _prints(
        self,
        checked: pl.DataFrame,
        merged: Merged,
        cols: dict[str, np.ndarray],
        ts: np.ndarray,
    ) -> np.ndarray:
        """`_bad_print` of the batch rows: the batch's minutes with their stored
        neighbours (the last `bad_print_window` minutes before each series; context only)."""
        cal, n = self.calendar, checked.height
        if cal is None or "_in_hours" not in checked.columns:
            return np.zeros(n, dtype=bool)
        use_batch = checked.select(
            ((pl.col("timeframe") == "1m") & pl.col("_in_hours") & pl.col("_valid"))
            .fill_null(False)
            .alias("u")
        )["u"].to_numpy()
        series_minutes = (checked["timeframe"] == "1m").to_numpy()[
            np.flatnonzero(checked["_new"].to_numpy())
        ]
        sel = merged.neighbour & series_minutes[merged.series]
        hist_at = merged.hist_at[sel]
        use = np.zeros(merged.size, dtype=bool)
        use[hist_at] = in_hours(cal, ts[hist_at])
        use[merged.batch_at] = use_batch
        keep = np.zeros(merged.size, dtype=bool)
        keep[hist_at] = True
        keep[merged.batch_at] = True
        if not merged.rows.size:  # the batch alone: no subset to gather
            names = ("high", "low", "close", "volume")
            h, lo, c, v = (cols[k] for k in names)
            return bad_print_marks(
                ts, h, lo, c, v, merged.new, use, self.intraday, session_closes(cal)
            )
        sub = np.flatnonzero(keep)
        series = merged.take(merged.series, np.cumsum(checked["_new"].to_numpy()) - 1)[sub]
        new = np.ones(sub.size, dtype=bool)
        new[1:] = series[1:] != series[:-1]
        marks = bad_print_marks(
            ts[sub],
            cols["high"][sub],
            cols["low"][sub],
            cols["close"][sub],
            cols["volume"][sub],
            new,
            use[sub],
            self.intraday,
            session_closes(cal),
        )
        return marks[np.searchsorted(sub, merged.batch_at)]

    def _history_rows(self) -> int:
        """Stored bars before a series' first batch bar that can change a batch result.

        A row's spike needs the `spike_window` returns before it (one more close), and
        the spike test of the row before it (`back`); stale runs and bad-print
        neighbours look back `stale_run` and `bad_print_window` bars. One spare row.
        """
        s = self.settings
        return max(s.spike_window + 3, s.stale_run, self.intraday.bad_print_window) + 1

    def _neighbour_rows(self) -> int:
        """Stored minutes before a series' first batch bar the bad-print check reads."""
        return self.intraday.bad_print_window

    # -- context columns -------------------------------------------------------------------
    def _bad_prints(self, checked: pl.DataFrame, history: pl.DataFrame | None) -> pl.DataFrame:
        """Add `_bad_print`; the stored minutes just before the batch are its first
        minutes' neighbours (context only: they are not judged again)."""
        settings, cal = self.intraday, self.calendar
        minutes = pl.col("timeframe") == "1m"
        if history is None or cal is None or not history.filter(minutes).height:
            return with_bad_prints(checked, settings, cal)
        first = checked.group_by("symbol", "timeframe").agg(_first=pl.col("ts").min())
        hist = (
            history.filter(minutes)
            .join(first, on=["symbol", "timeframe"])
            .filter(pl.col("ts") < pl.col("_first"))
            .sort("symbol", "ts")
            .group_by("symbol", maintain_order=True)
            .tail(settings.bad_print_window)
            .select(BAR_COLUMNS)
        )
        if hist.is_empty():
            return with_bad_prints(checked, settings, cal)
        hist = self._with_context(hist).with_columns(_valid=pl.lit(True), _i=pl.lit(-1, pl.Int32))
        sym, tf = pl.col("symbol"), pl.col("timeframe")
        batch = checked.with_row_index("_i").with_columns(pl.col("_i").cast(pl.Int32))
        both = (
            pl.concat([hist, batch], how="diagonal_relaxed")
            .sort("symbol", "timeframe", "ts", maintain_order=True)
            .with_columns(_new=(~((sym == sym.shift(1)) & (tf == tf.shift(1)))).fill_null(True))
        )
        marks = with_bad_prints(both, settings, cal).filter(pl.col("_i") >= 0).sort("_i")
        return checked.with_columns(_bad_print=marks["_bad_print"])

    def _with_context(self, df: pl.DataFrame, one_timeframe: bool = False) -> pl.DataFrame:
        if df.is_empty():
            return df
        if _single_timeframe(df, one_timeframe):
            return self._grid_context(df, Timeframe.parse(str(df["timeframe"][0])))
        parts = []
        for (tf_text,), part in df.group_by("timeframe", maintain_order=True):
            parts.append(self._grid_context(part, Timeframe.parse(str(tf_text))))
        return pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]

    def _grid_context(self, df: pl.DataFrame, tf: Timeframe) -> pl.DataFrame:
        cal = self.calendar
        if not tf.is_intraday:
            aligned = pl.col("ts").dt.truncate("1d") == pl.col("ts")
            if cal is None or str(tf) != "1d":
                return df.with_columns(_aligned=aligned)
            sessions = cal.schedule["session"]
            marks = _daily_marks(df["ts"], sessions)
            if marks is not None:
                return df.with_columns(_aligned=marks[0], _is_session=marks[1])
            return df.with_columns(
                _aligned=aligned,
                _is_session=pl.col("ts").dt.date().is_in(sessions.implode()),
            )
        step = tf.seconds
        assert step is not None
        if cal is None:
            return df.with_columns(
                _aligned=pl.col("ts").dt.truncate(tf.polars_every) == pl.col("ts")
            )
        ts = df["ts"]
        if ts.dtype == _UTC_US and not ts.null_count() and not _FRAME_PATH:  # cached sessions
            return df.with_columns(_intraday_marks(cal, ts.to_numpy().view(np.int64), tf))
        local_day = cal.local_dates(df["ts"]).alias("_day")
        joined = _with_sessions(df, local_day, cal.schedule)
        offset_s = (pl.col("ts") - pl.col("_open")).dt.total_seconds()
        return joined.with_columns(
            _is_session=pl.col("_open").is_not_null(),
            _in_hours=(pl.col("ts") >= pl.col("_open")) & (pl.col("ts") < pl.col("_close")),
            # outside regular hours there is no session grid to check against
            _aligned=pl.when(pl.col("ts") >= pl.col("_open"))
            .then(offset_s % step == 0)
            .otherwise(pl.col("ts").dt.truncate(tf.polars_every) == pl.col("ts")),
        ).drop("_day", "_open", "_close")

    # -- outputs ---------------------------------------------------------------------------
    @staticmethod
    def _rejected_rows(checked: pl.DataFrame, errors: list[Rule]) -> pl.DataFrame:
        if checked.is_empty():  # the schema alone, without a query
            reasons = dict.fromkeys(("rule", "severity", "reason"), pl.String)
            return pl.DataFrame(schema={**{c: checked.schema[c] for c in BAR_COLUMNS}, **reasons})
        bad = checked.filter(pl.col("_rejected"))
        if not errors:
            return bad.select(BAR_COLUMNS).with_columns(
                rule=pl.lit(None, pl.String),
                severity=pl.lit(None, pl.String),
                reason=pl.lit(None, pl.String),
            )
        return bad.select(
            *BAR_COLUMNS,
            rule=pl.concat_str(
                [pl.when(pl.col(r.name)).then(pl.lit(r.name)) for r in errors],
                separator=",",
                ignore_nulls=True,
            ),
            severity=pl.lit(Severity.ERROR.value),
            reason=pl.concat_str(
                [pl.when(pl.col(r.name)).then(pl.lit(r.message)) for r in errors],
                separator="; ",
                ignore_nulls=True,
            ),
        )

    @staticmethod
    def _row_issues(checked: pl.DataFrame, rules: list[Rule], limit: int) -> list[ValidationIssue]:
        issues: list[ValidationIssue] = []
        for rule in rules:
            at = np.flatnonzero(checked[rule.name].to_numpy())[:limit]
            symbols, times = checked["symbol"].gather(at), checked["ts"].gather(at)
            issues.extend(
                ValidationIssue(
                    symbol=s, ts=t, rule=rule.name, severity=rule.severity, message=rule.message
                )
                for s, t in zip(symbols, times, strict=True)
            )
        return issues

    def missing(self, bars: pl.DataFrame) -> pl.DataFrame:
        """Return (symbol, ts) of bars the calendar expects inside each series' span."""
        return self._missing_bars(bars.sort("symbol", "timeframe", "ts"))

    def _missing_bars(self, clean: pl.DataFrame, one_timeframe: bool = False) -> pl.DataFrame:
        """Return (symbol, ts) of expected bars absent between each series' first and last bar.

        Only gaps inside the delivered span count: a series starting late (listing) or
        ending early (delisting) is not incomplete.
        """
        empty = pl.DataFrame(schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")})
        cal = self.calendar
        if cal is None or clean.is_empty():
            return empty
        if "_new" in clean.columns and clean["_new"].all():
            return empty  # every series is one bar: nothing can be missing inside its span
        out = [empty]
        groups = (
            [((clean["timeframe"][0],), clean)]
            if _single_timeframe(clean, one_timeframe)
            else clean.group_by("timeframe", maintain_order=True)
        )
        for (tf_text,), part in groups:
            tf = Timeframe.parse(str(tf_text))
            if not (tf.is_intraday or str(tf) == "1d"):
                continue
            out.append(self._missing_for(part, tf, cal))
        return pl.concat(out)

    @staticmethod
    def _missing_for(part: pl.DataFrame, tf: Timeframe, cal: TradingCalendar) -> pl.DataFrame:
        none = pl.DataFrame(schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")})
        lo: date = part["ts"].min().date()  # type: ignore[union-attr]
        hi: date = part["ts"].max().date()  # type: ignore[union-attr]
        lo_d = max(lo, cal.first_session)
        hi_d = min(hi, cal.last_session)
        if hi_d < lo_d:
            return none
        grid = cal.bar_starts(lo_d, hi_d, tf)
        # bars off the grid (pre/post market, weekends) must not make up for missing ones
        if str(tf) == "1d" and {"_aligned", "_is_session"} <= set(part.columns):
            # the daily grid is the sessions at 00:00 UTC: the context marks say it already
            on = (part["_aligned"] & part["_is_session"]).fill_null(False)
        else:
            on = part.select(pl.col("ts").is_in(grid.implode()).fill_null(False)).to_series()
        if not on.all():
            part = part.filter(on).drop("_new", strict=False)  # counted by group-by, not marks
            if part.is_empty():
                return none
        spans = _spans(part)
        grid_us = grid.dt.epoch("us").to_numpy()
        first_us = spans["first"].dt.epoch("us").to_numpy()
        last_us = spans["last"].dt.epoch("us").to_numpy()
        expected = np.searchsorted(grid_us, last_us, side="right") - np.searchsorted(
            grid_us, first_us, side="left"
        )
        short = spans.with_columns(expected=pl.Series(expected)).filter(
            pl.col("expected") > pl.col("n")
        )
        if short.is_empty():
            return pl.DataFrame(schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")})
        grid_df = pl.DataFrame({"ts": grid})
        wanted = (
            short.select("symbol", "first", "last")
            .join(grid_df, how="cross")
            .filter(pl.col("ts").is_between(pl.col("first"), pl.col("last")))
            .select("symbol", "ts")
        )
        have = part.filter(pl.col("symbol").is_in(short["symbol"].implode())).select("symbol", "ts")
        return wanted.join(have, on=["symbol", "ts"], how="anti").sort("symbol", "ts")


_UTC_US = pl.Datetime("us", "UTC")


def _intraday_marks(cal: TradingCalendar, us: np.ndarray, tf: Timeframe) -> list[pl.Expr]:
    """`_is_session`, `_in_hours` (null off-session) and `_aligned` of intraday bars.

    The marks of the frame path below: on the session grid from the open, elsewhere on
    the timeframe's grid (a UTC `dt.truncate` of a fixed duration is epoch-based).
    """
    step = tf.seconds
    assert step is not None
    hit, opens, closes = session_marks(cal, us)
    after_open = hit & (us >= opens)
    aligned = np.where(
        after_open, (us - opens) // 1_000_000 % step == 0, us % (step * 1_000_000) == 0
    )
    return [
        pl.lit(pl.Series("_is_session", hit)),
        pl.when(pl.Series(hit)).then(pl.Series(after_open & (us < closes))).alias("_in_hours"),
        pl.lit(pl.Series("_aligned", aligned)),
    ]


def _with_sessions(df: pl.DataFrame, day: pl.Series, schedule: pl.DataFrame) -> pl.DataFrame:
    """Add `_day`, `_open` and `_close` (null off-session) of each row's local date.

    A binary search of the sorted session dates: a join would hash the whole schedule
    (decades of sessions) on every call, the main cost for a small streaming batch.
    """
    sessions = schedule["session"]
    if day.null_count() or not sessions.is_sorted() or sessions.is_empty():
        return df.with_columns(day).join(
            schedule.select(
                pl.col("session").alias("_day"),
                pl.col("open").alias("_open"),
                pl.col("close").alias("_close"),
            ),
            on="_day",
            how="left",
            maintain_order="left",
        )
    known = sessions.cast(pl.Int32).to_numpy()
    days = day.cast(pl.Int32).to_numpy()
    at = np.minimum(np.searchsorted(known, days), known.size - 1)
    hit = pl.Series(known[at] == days)
    return df.with_columns(
        day,
        _open=pl.when(hit).then(schedule["open"].gather(at)),
        _close=pl.when(hit).then(schedule["close"].gather(at)),
    )


def profile(
    df: pl.DataFrame, *, symbols: int | None = None, timeframes: list[str] | None = None
) -> dict[str, Any]:
    """Return a small profile of a bar batch: shape, time span and per-column statistics.

    `symbols` and `timeframes` may be passed when the caller already knows them.
    """
    if df.is_empty():
        return {"rows": 0}
    numeric = ["open", "high", "low", "close", "volume"]
    stats = df.select(
        *[pl.col(c).min().alias(f"{c}:min") for c in numeric],
        *[pl.col(c).max().alias(f"{c}:max") for c in numeric],
        *[pl.col(c).mean().alias(f"{c}:mean") for c in numeric],
        *[pl.col(c).std().alias(f"{c}:std") for c in numeric],
        *[pl.col(c).is_nan().sum().alias(f"{c}:nan") for c in (*numeric, "vwap")],
        *[pl.col(c).null_count().alias(f"{c}:nulls") for c in (*numeric, "vwap", "trades")],
        symbols=pl.col("symbol").n_unique() if symbols is None else pl.lit(symbols),
        first_ts=pl.col("ts").min(),
        last_ts=pl.col("ts").max(),
    ).row(0, named=True)
    columns: dict[str, dict[str, Any]] = {}
    for key, value in stats.items():
        if ":" in key:
            col, stat = key.split(":")
            columns.setdefault(col, {})[stat] = _plain(value)
    return {
        "rows": df.height,
        "symbols": stats["symbols"],
        "timeframes": sorted(timeframes or df["timeframe"].unique().to_list()),
        "first_ts": _plain(stats["first_ts"]),
        "last_ts": _plain(stats["last_ts"]),
        "columns": columns,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
