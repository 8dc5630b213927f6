"""Run the rules over a batch: split it into stored rows and quarantined rows, and report.

The rules are Polars expressions, evaluated in two queries (the row and calendar rules,
then the series rules). Everything around them (series marks, calendar context, the
stored history, flag bits, outputs and day scores) works on numpy views of the columns:
for a streaming micro-batch of a few hundred bars a Polars query costs more in fixed
overhead than numpy does in work (issues 14 and 20).

Keys must be canonical: a null symbol, timeframe or ts raises `SchemaError`, as
`coerce_bars` does, and times in another unit or zone are converted to UTC microseconds
before any check (batch and history alike).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Final

import numpy as np
import polars as pl

from quantivista.config import IntradaySettings, QualitySettings
from quantivista.errors import SchemaError
from quantivista.model.flags import QualityFlag
from quantivista.model.jobs import DataQualityReport, Severity, ValidationIssue
from quantivista.model.schema import (
    BAR_COLUMNS,
    BAR_KEY,
    BAR_POLARS_SCHEMA,
    BAR_VALUE_COLUMNS,
    PL_UTC_TS,
    SCORE_SCHEMA,
    utc_expr,
    utc_lit,
)
from quantivista.model.timeframe import Timeframe
from quantivista.quality.history import Merged, marked, merge_history, micros
from quantivista.quality.intraday import bad_print_marks
from quantivista.quality.rules import DEFAULT_RULES, SERIES_COLUMNS, Rule
from quantivista.quality.series import series_columns, series_flags
from quantivista.quality.sessions import in_hours, session_closes, session_marks
from quantivista.reference.calendars import TradingCalendar

__all__ = ["SCORE_SCHEMA", "ValidationResult", "Validator", "batch_score", "day_scores", "profile"]

MAX_ISSUES_PER_RULE = 50
# arrival order says nothing about the bar itself: it does not lower the score
_SCORED_BITS = 0xFFFFFFFF & ~int(QualityFlag.OUT_OF_ORDER)
_SOFT_WEIGHT = 0.5  # a flagged row counts half: stored, but worth a look
_KEYS: Final = ("symbol", "timeframe", "ts")
_DAY_US: Final = 86_400_000_000
_EMPTY_BARS: Final = pl.DataFrame(schema=BAR_POLARS_SCHEMA)
_EMPTY_SCORES: Final = pl.DataFrame(schema=SCORE_SCHEMA)
# queries of this module collect in memory, as eager frame methods do: the engine Polars
# picks by itself (streaming) costs twice the instructions on a micro-batch's frames
_ENGINE: Final = "in-memory"


def batch_score(total: int, rejected: int, flagged: int, missing: int) -> float:
    """Return the quality score of a batch in [0, 1]: clean rows over rows plus missing bars.

    Rejected rows and missing bars count 0, flagged rows count half.
    """
    denominator = total + missing
    if denominator == 0:
        return 1.0
    good = total - rejected - _SOFT_WEIGHT * flagged
    return min(1.0, max(0.0, good / denominator))


def _canonical(frame: pl.DataFrame, what: str) -> pl.DataFrame:
    """Return `frame` with `ts` in UTC microseconds; raise `SchemaError` on a null key or
    naive timestamps (`coerce_bars` refuses both: a key-less bar cannot be stored)."""
    nulls = {c: frame[c].null_count() for c in _KEYS}
    if any(nulls.values()):
        raise SchemaError(f"{what}: symbol, timeframe and ts must not be null", **nulls)
    if frame["ts"].dtype == PL_UTC_TS:
        return frame
    return frame.with_columns(utc_expr(frame["ts"], "ts"))


def _no_bars() -> pl.DataFrame:
    return _EMPTY_BARS.clear()


@dataclass(frozen=True, slots=True)
class _Marks:
    """What the arrival-order pass learned: one timeframe in the batch, and whether a row
    shares its key with the row before (None: not known, after a sort)."""

    one_timeframe: bool
    repeats: bool | None


def _sorted(bars: pl.DataFrame) -> pl.DataFrame:
    """`_arranged` without its marks."""
    return _arranged(bars)[0]


def _arranged(bars: pl.DataFrame) -> tuple[pl.DataFrame, _Marks]:
    """Return `bars` with each series in ts order, with `_out_of_order` and `_new` marks.

    A row is out of order when an earlier row of its series (in arrival order) has a later
    ts. Data that arrives with each (symbol, timeframe) series as one block in ts order
    (sorted, or in provider order) skips both the group pass and the sort: equal keys are
    then neighbours, which is all the duplicate and series checks need. The test is the
    one of `series_in_blocks(strict=False)`, on neighbour comparisons of the key columns.
    """
    n = bars.height
    if not n:
        empty = [pl.Series("_out_of_order", [], pl.Boolean), pl.Series("_new", [], pl.Boolean)]
        return bars.hstack(empty), _Marks(False, False)
    sym, tf = bars["symbol"], bars["timeframe"]
    us = micros(bars["ts"])
    new, same_tf = _series_starts(sym, tf)
    one_tf = bool(same_tf.all())
    if bool((new[1:] | (us[1:] >= us[:-1])).all()) and _distinct_starts(sym, tf, new, one_tf):
        repeats = bool((~new[1:] & (us[1:] == us[:-1])).any())
        marks = [pl.Series("_out_of_order", np.zeros(n, dtype=bool)), pl.Series("_new", new)]
        return bars.hstack(marks), _Marks(one_tf, repeats)
    sym_c, tf_c, ts_c = pl.col("symbol"), pl.col("timeframe"), pl.col("ts")
    late = (ts_c < ts_c.cum_max().shift(1)).fill_null(False).over("symbol", "timeframe")
    df = bars.with_columns(_out_of_order=late).sort(list(BAR_KEY), maintain_order=True)
    same = (sym_c == sym_c.shift(1)) & (tf_c == tf_c.shift(1))
    return df.with_columns(_new=(~same).fill_null(True)), _Marks(one_tf, None)


def _distinct_starts(sym: pl.Series, tf: pl.Series, new: np.ndarray, one_tf: bool) -> bool:
    """Whether no (symbol, timeframe) starts two runs of rows (each series one block)."""
    count = int(np.count_nonzero(new))
    if count < 2:
        return True
    keys = marked(sym, new)
    if one_tf:  # neighbouring starts differ: sorted starts are distinct
        return keys.is_sorted() or keys.n_unique() == count
    return not pl.DataFrame([keys, marked(tf, new)]).is_duplicated().any()


def _by_key(df: pl.DataFrame) -> pl.DataFrame:
    """A frame of `_sorted` with its series in (symbol, timeframe) order, new `_new` marks."""
    sym, tf = pl.col("symbol"), pl.col("timeframe")
    return df.sort("symbol", "timeframe", "ts", maintain_order=True).with_columns(
        _new=(~((sym == sym.shift(1)) & (tf == tf.shift(1)))).fill_null(True)
    )


def _daily_marks(us: np.ndarray, sessions: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Return `_aligned` (00:00 UTC) and `_is_session` of daily bars.

    Day numbers index a table of the sessions: a gather instead of hashing every row's
    date.
    """
    day = us // _DAY_US
    first, last = int(day.min()), int(day.max())
    known = sessions.cast(pl.Int32).to_numpy().astype(np.int64)
    known = known[(known >= first) & (known <= last)]
    table = np.zeros(last - first + 1, dtype=bool)
    table[known - first] = True
    return pl.Series("_aligned", day * _DAY_US == us), pl.Series("_is_session", table[day - first])


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


def _single_timeframe(df: pl.DataFrame, known: bool = False) -> bool:
    """Say whether every row has the first row's timeframe (cheaper than n_unique);
    `known`: the caller knows it does."""
    if known:
        return True
    tf = df["timeframe"]
    return bool((tf == tf[0]).all())


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
    us = micros(df["ts"])
    marks = np.zeros(df.height, dtype=bool)
    marks[1:] = ~df["_new"].to_numpy()[1:] & (us[1:] == us[:-1])
    if not marks.any():
        return df.hstack([pl.Series("_dup_conflict", np.zeros(df.height, dtype=bool))]), 0
    involved = pl.Series(marks | np.append(marks[1:], False))
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


_PENDING = int(QualityFlag.SPIKE_PENDING)


def _f64(df: pl.DataFrame, name: str) -> np.ndarray:
    col = df[name]
    return (col.fill_null(np.nan) if col.null_count() else col).to_numpy()


def _u32(flags: pl.Series) -> np.ndarray:
    """Flag bits as numpy (null: no bit)."""
    out: np.ndarray = (flags.fill_null(0) if flags.null_count() else flags).to_numpy()
    return out


def _decided_rows(
    history: pl.DataFrame, merged: Merged, flags: dict[str, np.ndarray], checked: pl.DataFrame
) -> pl.DataFrame | None:
    """Stored bars with a pending spike whose flags the batch's bars now decide.

    Confirmed: the pending bit becomes SPIKE; cleared: it is dropped; still without a next
    valid bar: unchanged. A decided bar is a new version of the stored bar (its flags
    changed), known from the batch's knowledge time. Only the pending bars that changed
    are gathered from `history`.
    """
    before = _u32(history["quality_flags"])[merged.rows]
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
        ingested_at=utc_lit(when) if isinstance(when, datetime) else pl.lit(None, PL_UTC_TS),
        job_id=pl.lit(job, dtype=pl.String),
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
    ts_us = micros(ts)
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


def _series_starts(sym: pl.Series, tf: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose (symbol, timeframe) differs from the row before (the first row
    included), and whether each row after the first has the timeframe of the row before."""
    n = sym.len()
    new = np.ones(n, dtype=bool)
    if n < 2:
        return new, np.ones(0, dtype=bool)
    same_tf = (tf.slice(1) == tf.slice(0, n - 1)).to_numpy()
    new[1:] = ~((sym.slice(1) == sym.slice(0, n - 1)).to_numpy() & same_tf)
    return new, same_tf


def day_scores(checked: pl.DataFrame, missing: pl.DataFrame, job_id: str) -> pl.DataFrame:
    """Return a quality score per (symbol, timeframe, session date) of a checked batch.

    `checked` holds the key columns, `quality_flags` and `_rejected`, in any order;
    `missing` the (symbol, ts) of expected bars that never came.
    """
    if checked.is_empty():
        return _EMPTY_SCORES.clear()
    ordered = checked.sort("symbol", "timeframe", "ts", maintain_order=True)
    new, _ = _series_starts(ordered["symbol"], ordered["timeframe"])
    rejected = ordered["_rejected"].to_numpy()
    return _day_scores(ordered, new, rejected, _u32(ordered["quality_flags"]), missing, job_id)


def _day_scores(
    checked: pl.DataFrame,
    new: np.ndarray,
    rejected: np.ndarray,
    flags: np.ndarray,
    missing: pl.DataFrame,
    job_id: str,
    timeframes: list[str] | None = None,
) -> pl.DataFrame:
    """`day_scores` of a frame whose series are blocks in ts order (`new` marks their first
    rows), given each row's rejection and flag bits; told the timeframes when known.

    A day's rows are then one run of a series: counts are sums over runs. Daily and longer
    bars count each row as its own day, as they come.
    """
    n = checked.height
    if not n:
        return _EMPTY_SCORES.clear()
    if timeframes is None:
        timeframes = checked["timeframe"].unique().to_list()
    day = micros(checked["ts"]) // _DAY_US
    flagged = ~rejected & ((flags & _SCORED_BITS) != 0)
    sym, tf = checked["symbol"], checked["timeframe"]
    if set(timeframes) <= {"1d", "1w", "1mo"}:
        rows = np.ones(n, dtype=np.uint32)
        rej, flg = rejected.astype(np.uint32), flagged.astype(np.uint32)
        # a day of one row: (1 - rejected - 0.5 flagged) / 1, in [0, 1] already
        score = 1.0 - rejected - _SOFT_WEIGHT * flagged
    else:
        first = new.copy()
        first[1:] |= day[1:] != day[:-1]
        starts = np.flatnonzero(first)
        rows = np.diff(np.append(starts, n)).astype(np.uint32)
        rej = np.add.reduceat(rejected, starts, dtype=np.uint32)
        flg = np.add.reduceat(flagged, starts, dtype=np.uint32)
        sym, tf, day = marked(sym, first), marked(tf, first), day[starts]
        good = (rows - rej).astype(np.float64) - _SOFT_WEIGHT * flg
        score = np.clip(good / rows, 0.0, 1.0)
    date = pl.Series("date", day.astype(np.int32)).cast(pl.Date)
    counts = [pl.Series("rows", rows), pl.Series("rejected", rej), pl.Series("flagged", flg)]
    if missing.height:
        per_day = pl.DataFrame([sym.alias("symbol"), tf.alias("timeframe"), date, *counts])
        return _with_missing(per_day, checked, missing, job_id)
    out = pl.DataFrame(
        [
            sym.alias("symbol"),
            tf.alias("timeframe"),
            date,
            pl.Series("job_id", [job_id], pl.String).new_from_index(0, rows.size),
            *counts,
            pl.Series("missing", np.zeros(rows.size, dtype=np.uint32)),
            pl.Series("score", score),
        ]
    )
    # the counts and the score have their dtypes by construction: only the keys may differ
    plain = sym.dtype == pl.String and tf.dtype == pl.String
    return out if plain else out.cast(SCORE_SCHEMA)


def _with_missing(
    per_day: pl.DataFrame, checked: pl.DataFrame, missing: pl.DataFrame, job_id: str
) -> pl.DataFrame:
    """Day scores with the missing bars of each series' days (a bar that never came counts
    0, in the day it was due)."""
    gaps = (
        missing.join(checked.select("symbol", "timeframe").unique(), on="symbol")
        .group_by("symbol", "timeframe", date=pl.col("ts").dt.date())
        .agg(missing=pl.len().cast(pl.UInt32))
    )
    good = pl.col("rows") - pl.col("rejected") - _SOFT_WEIGHT * pl.col("flagged")
    out = (
        per_day.lazy()
        .join(gaps.lazy(), on=["symbol", "timeframe", "date"], how="full", coalesce=True)
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
    scores: pl.DataFrame = field(default_factory=lambda: _EMPTY_SCORES.clear())
    # stored bars (before the batch) whose pending spike the batch confirmed or cleared:
    # new versions to store with the clean rows
    decided: pl.DataFrame = field(default_factory=lambda: _no_bars())


@dataclass(frozen=True, slots=True)
class _Plan:
    """Which rules run in which phase, for a given set of context columns, with their
    expressions (built once per validator: an expression costs Python calls to build)."""

    first: tuple[Rule, ...]
    later: tuple[Rule, ...]
    first_exprs: tuple[pl.Expr, ...]
    later_exprs: tuple[pl.Expr, ...]


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
        self._plans: dict[tuple[int, frozenset[str]], _Plan] = {}

    def with_rules(self, rules: tuple[Rule, ...]) -> Validator:
        """Return a validator with the same calendar and settings but other rules."""
        return type(self)(self.calendar, rules, self.settings, self.intraday)

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
        if not rules:
            return bars.select(pl.lit(0, pl.UInt32).alias("quality_flags")).to_series()
        zero = pl.lit(0, pl.UInt32)
        bits = [
            pl.when(r.violation()).then(pl.lit(int(r.flag), pl.UInt32)).otherwise(zero)
            for r in rules
        ]
        # rules with distinct bits add up to their OR; shared bits need the OR
        if len({int(r.flag) for r in rules}) == len(rules):
            combined = pl.sum_horizontal(bits).cast(pl.UInt32)
        else:
            combined = pl.reduce(lambda a, b: a | b, bits).cast(pl.UInt32)
        return bars.select(combined.alias("quality_flags")).to_series()

    def _plan(self, columns: Sequence[str]) -> _Plan:
        """The rules of each phase given the context columns (cached per column set)."""
        have = frozenset(columns)
        key = (id(self.rules), have)
        plan = self._plans.get(key)
        if plan is None:
            first = tuple(r for r in self.rules if all(n in have for n in r.needs))
            later = tuple(
                r
                for r in self.rules
                if not all(n in have for n in r.needs) and all(n in SERIES_COLUMNS for n in r.needs)
            )
            plan = _Plan(
                first, later, tuple(r.expr() for r in first), tuple(r.expr() for r in later)
            )
            self._plans[key] = plan
        return plan

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
        rows are context only: they are neither checked nor returned. A null key raises
        `SchemaError`; times in another unit or zone are taken in UTC microseconds.
        """
        bars = _canonical(bars, "bars")
        if history is not None and history.height:
            history = _canonical(history, "history")
        total = bars.height
        # one chunk per column: on a frame whose columns are chunked differently (a concat
        # of per-symbol frames) every later select would first copy the whole frame
        ordered, marks = _arranged(bars.rechunk())
        one_tf = marks.one_timeframe
        shape = _known_shape(ordered, one_tf)  # dedupe keeps every series' first row
        profiled = _profile_soon(bars, shape)
        deduped, exact_dupes = _dedupe(ordered, marks.repeats)
        ctx = self._with_context(deduped, one_tf)
        plan = self._plan(ctx.columns)
        checked, hits = _with_rules(ctx, plan.first, plan.first_exprs)
        decided: pl.DataFrame | None = None
        if plan.later:
            # an error rule that never fired invalidates no row
            valid = np.ones(checked.height, dtype=bool)
            for r in plan.first:
                if r.severity is Severity.ERROR and r.name in hits:
                    valid &= ~hits[r.name]
            checked = checked.hstack([pl.Series("_valid", valid)])
            gap = any("_gap_s" in r.needs for r in plan.later)  # only a business rule reads it
            prints = any("_bad_print" in r.needs for r in plan.later)
            checked, decided = self._with_series(
                checked, history, actions, gap=gap, prints=prints, one_tf=one_tf
            )
            checked, later_hits = _with_rules(checked, plan.later, plan.later_exprs)
            hits |= later_hits
        n = checked.height
        rules = plan.first + plan.later
        rule_counts = {r.name: int(np.count_nonzero(hits[r.name])) for r in rules if r.name in hits}
        # a rule that never fired adds no flag bit and rejects nothing
        hit = [r for r in rules if r.name in rule_counts]
        bits = np.zeros(n, dtype=np.uint32)
        rejected_rows = np.zeros(n, dtype=bool)
        for r in hit:
            bits[hits[r.name]] |= np.uint32(int(r.flag))
            if r.severity is Severity.ERROR:
                rejected_rows |= hits[r.name]
        stored = checked["quality_flags"]
        flags = stored | pl.Series(bits) if hit else stored
        n_rejected = int(np.count_nonzero(rejected_rows))
        flag_bits = _u32(flags)
        soft = int(np.count_nonzero(((flag_bits & _SCORED_BITS) != 0) & ~rejected_rows))
        if exact_dupes:
            rule_counts["duplicate"] = exact_dupes
        if decided is not None and decided.height:
            confirmed = int(((decided["quality_flags"] & int(QualityFlag.SPIKE)) != 0).sum())
            if confirmed:
                rule_counts["spike_confirmed"] = confirmed
            if decided.height - confirmed:
                rule_counts["spike_cleared"] = decided.height - confirmed

        out = checked[list(BAR_COLUMNS)]  # a frame of our own: its flags column is replaced
        out.replace_column(_FLAGS_AT, flags)
        if n_rejected:
            errors = [r for r in rules if r.severity is Severity.ERROR]
            mask = pl.Series(rejected_rows)
            rejected = self._rejected_rows(out.filter(mask), checked.filter(mask), errors)
            clean = out.filter(~mask)
        else:
            rejected = _no_rejects(out)
            clean = out
        issues = self._row_issues(checked, hit, hits, self.settings.max_issues_per_rule)
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
            checked["_new"].to_numpy(),
            rejected_rows,
            flag_bits,
            missing,
            job_id,
            shape.get("timeframes"),
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

    # -- along each series -------------------------------------------------------------
    def _with_series(
        self,
        checked: pl.DataFrame,
        history: pl.DataFrame | None,
        actions: pl.DataFrame | None,
        *,
        gap: bool,
        prints: bool,
        one_tf: bool,
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """Add the series flags (and `_gap_s`, `_bad_print` when asked) to `checked`, with
        the stored bars before each series as context; return it with the stored bars
        whose pending spike the batch decides (None: none)."""
        rows, tail = self._history_rows(), self._neighbour_rows()
        tail = min(tail, rows)
        merged = merge_history(history, checked, rows, tail, one_tf)
        if merged.rows.size and not merged.keys_sorted:
            # with stored bars the results come in (symbol, timeframe, ts) order
            checked = _by_key(checked)
            merged = merge_history(history, checked, rows, tail, one_tf)
        return self._along_series(checked, merged, history, actions, gap=gap, prints=prints)

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
        """The series columns from the merged stored + batch rows: numpy columns gathered
        by `merged`'s positions, no merged frame is built."""
        batch = series_columns(checked)
        values = ("open", "high", "low", "close", "volume")
        alone = not merged.rows.size  # merged rows are the batch's rows
        if alone:
            cols = {k: batch[k] for k in values}
            cols["valid"] = batch["valid"]
            ts = micros(checked["ts"])
        else:
            assert history is not None
            cols = {k: merged.take(_f64(history, k), batch[k]) for k in values}
            cols["valid"] = np.ones(merged.size, dtype=bool)  # stored bars are valid
            cols["valid"][merged.batch_at] = batch["valid"]
            ts = merged.take(micros(history["ts"]), micros(checked["ts"]))
        cols["new"] = merged.new
        starts = np.flatnonzero(batch["new"])
        series = merged.series_of_rows()

        def keys() -> pl.DataFrame:
            return pl.DataFrame(
                {
                    "symbol": checked["symbol"].gather(starts).gather(series),
                    "ts": pl.Series(ts).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
                }
            )

        flags = series_flags(cols, keys, actions, self.settings)
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
        if merged.decides:
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
        minutes = (checked["timeframe"] == "1m").to_numpy()
        hours = checked["_in_hours"]
        use_batch = minutes & _true(hours) & checked["_valid"].to_numpy()
        series_minutes = minutes[np.flatnonzero(checked["_new"].to_numpy())]
        sel = merged.neighbour & series_minutes[merged.series]  # (kept bars' series)
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
        series = merged.series_of_rows()[sub]
        new = np.ones(sub.size, dtype=bool)
        new[1:] = series[1:] != series[:-1]
        batch_rows = np.searchsorted(sub, merged.batch_at)
        judge = np.zeros(sub.size, dtype=bool)
        judge[batch_rows] = True  # the stored minutes are neighbours only
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
            judge,
        )
        return marks[batch_rows]

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
        """Add `_aligned`, and with a calendar `_is_session` (daily and intraday) and
        `_in_hours` (intraday; null off-session) of one timeframe's rows."""
        cal, us = self.calendar, micros(df["ts"])
        if not tf.is_intraday:
            if cal is None or str(tf) != "1d":
                return df.hstack([pl.Series("_aligned", us % _DAY_US == 0)])
            return df.hstack(list(_daily_marks(us, cal.schedule["session"])))
        step = tf.seconds
        assert step is not None
        if cal is None:  # the timeframe's grid from the epoch (a UTC `dt.truncate`)
            return df.hstack([pl.Series("_aligned", us % (step * 1_000_000) == 0)])
        return df.hstack(self._intraday_marks(cal, us, step))

    @staticmethod
    def _intraday_marks(cal: TradingCalendar, us: np.ndarray, step: int) -> list[pl.Series]:
        """`_is_session`, `_in_hours` (null off-session) and `_aligned` of intraday bars:
        on the session grid from the open, elsewhere on the timeframe's grid (a UTC
        `dt.truncate` of a fixed duration is epoch-based)."""
        hit, opens, closes = session_marks(cal, us)
        after_open = hit & (us >= opens)
        aligned = np.where(
            after_open, (us - opens) // 1_000_000 % step == 0, us % (step * 1_000_000) == 0
        )
        hours = pl.Series("_in_hours", after_open & (us < closes))
        if not hit.all():
            hours = hours.scatter(np.flatnonzero(~hit), None)
        return [pl.Series("_is_session", hit), hours, pl.Series("_aligned", aligned)]

    # -- outputs ---------------------------------------------------------------------------
    @staticmethod
    def _rejected_rows(
        bad: pl.DataFrame, checked: pl.DataFrame, errors: list[Rule]
    ) -> pl.DataFrame:
        """The rejected rows (`bad`, canonical columns) with the error rules they broke
        (the rule columns of `checked`, the same rows)."""
        if not errors:
            return bad.with_columns(
                rule=pl.lit(None, pl.String),
                severity=pl.lit(None, pl.String),
                reason=pl.lit(None, pl.String),
            )
        reasons = checked.select(
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
        return bad.hstack(reasons.get_columns())

    @staticmethod
    def _row_issues(
        checked: pl.DataFrame, rules: list[Rule], hits: dict[str, np.ndarray], limit: int
    ) -> list[ValidationIssue]:
        if not rules:
            return []
        picked = [np.flatnonzero(hits[rule.name])[:limit] for rule in rules]
        # every rule's few rows in one gather (a scalar lookup per row costs more)
        at = np.concatenate(picked)  # a numpy index takes natively (a gather is a query)
        symbols = checked["symbol"][at].to_list()
        times = checked["ts"][at].to_list()
        rule_of = [rule for rule, rows in zip(rules, picked, strict=True) for _ in range(rows.size)]
        return [
            ValidationIssue(
                symbol=symbol, ts=ts, rule=rule.name, severity=rule.severity, message=rule.message
            )
            for rule, symbol, ts in zip(rule_of, symbols, times, strict=True)
        ]

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


def _true(marks: pl.Series) -> np.ndarray:
    """A boolean column as numpy (null: false)."""
    out: np.ndarray = (marks.fill_null(False) if marks.null_count() else marks).to_numpy()
    return out


_NO_REASONS: Final = pl.DataFrame(schema=dict.fromkeys(("rule", "severity", "reason"), pl.String))
_FLAGS_AT: Final = BAR_COLUMNS.index("quality_flags")


def _no_rejects(clean: pl.DataFrame) -> pl.DataFrame:
    """The empty rejected frame: the columns of `clean` plus rule, severity and reason."""
    return clean.clear().hstack(_NO_REASONS.get_columns())


def _with_rules(
    df: pl.DataFrame, rules: tuple[Rule, ...], exprs: tuple[pl.Expr, ...]
) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """`df` with the rules' columns (one select), and the hits of each rule that fired as
    numpy (rule columns are null-free booleans; a rule that never fired is left out)."""
    if not rules:
        return df, {}
    found = df.select(exprs)
    hits = {}
    for rule, column in zip(rules, found.get_columns(), strict=True):
        if column.any():
            hits[rule.name] = column.to_numpy()
    return df.hstack(found.get_columns()), hits


_NUMERIC = ("open", "high", "low", "close", "volume")
# the statistics of `profile`, built once (an expression costs Python calls to build)
_PROFILE_EXPRS: Final = (
    *[pl.col(c).min().alias(f"{c}:min") for c in _NUMERIC],
    *[pl.col(c).max().alias(f"{c}:max") for c in _NUMERIC],
    *[pl.col(c).mean().alias(f"{c}:mean") for c in _NUMERIC],
    *[pl.col(c).std().alias(f"{c}:std") for c in _NUMERIC],
    *[pl.col(c).is_nan().sum().alias(f"{c}:nan") for c in (*_NUMERIC, "vwap")],
    *[pl.col(c).null_count().alias(f"{c}:nulls") for c in (*_NUMERIC, "vwap", "trades")],
    pl.col("ts").min().alias("first_ts"),
    pl.col("ts").max().alias("last_ts"),
)
_SYMBOL_COUNT: Final = pl.col("symbol").n_unique().alias("symbols")
# (column, statistic) of each of `_PROFILE_EXPRS` in order, split once ("" for the span)
_PROFILE_KEYS: Final = tuple(
    tuple(e.meta.output_name().split(":")) if ":" in e.meta.output_name() else ("", "")
    for e in _PROFILE_EXPRS
)


def profile(
    df: pl.DataFrame, *, symbols: int | None = None, timeframes: list[str] | None = None
) -> dict[str, Any]:
    """Return a small profile of a bar batch: shape, time span and per-column statistics.

    `symbols` and `timeframes` may be passed when the caller already knows them.
    """
    if df.is_empty():
        return {"rows": 0}
    exprs = _PROFILE_EXPRS if symbols is not None else (*_PROFILE_EXPRS, _SYMBOL_COUNT)
    values = df.select(exprs).row(0)
    columns: dict[str, dict[str, Any]] = {}
    for (col, stat), value in zip(_PROFILE_KEYS, values, strict=False):  # the statistics
        if col:
            columns.setdefault(col, {})[stat] = _plain(value)
    first_ts, last_ts = values[len(_PROFILE_KEYS) - 2 : len(_PROFILE_KEYS)]
    return {
        "rows": df.height,
        "symbols": values[-1] if symbols is None else symbols,
        "timeframes": sorted(timeframes or df["timeframe"].unique().to_list()),
        "first_ts": _plain(first_ts),
        "last_ts": _plain(last_ts),
        "columns": columns,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
