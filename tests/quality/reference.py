"""The frame path: the reference the validator's numpy path is held to.

Before the numpy path, the validator built the series, history, bad-print and calendar
context from Polars frames: joins of the stored history with the batch's series, concats
and sorts of history + batch, a join of the exchange schedule, a group-by of day scores.
Those are kept here, as they were, so the tests can run the same batch both ways
(`FrameValidator`, `frame_day_scores`); nothing in `src` uses them.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from quantivista.config import IntradaySettings, QualitySettings
from quantivista.model.flags import QualityFlag
from quantivista.model.schema import BAR_COLUMNS, BAR_POLARS_SCHEMA, SCORE_SCHEMA, empty_bars
from quantivista.model.timeframe import Timeframe
from quantivista.quality.intraday import bad_print_marks
from quantivista.quality.series import series_columns, series_flags
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import TradingCalendar

__all__ = ["FrameValidator", "frame_day_scores", "series_context", "with_bad_prints"]

_PENDING = int(QualityFlag.SPIKE_PENDING)
_SCORED_BITS = 0xFFFFFFFF & ~int(QualityFlag.OUT_OF_ORDER)
_SOFT_WEIGHT = 0.5


def _no_bars() -> pl.DataFrame:
    return empty_bars()


def _f64(df: pl.DataFrame, name: str) -> np.ndarray:
    col = df[name]
    return (col.fill_null(np.nan) if col.null_count() else col).to_numpy()


class FrameValidator(Validator):
    """The validator with the frame path's series, history and calendar context."""

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

    def _grid_context(self, df: pl.DataFrame, tf: Timeframe) -> pl.DataFrame:
        """The calendar marks as expressions and a join of the session schedule."""
        cal = self.calendar
        if not tf.is_intraday:
            aligned = pl.col("ts").dt.truncate("1d") == pl.col("ts")
            if cal is None or str(tf) != "1d":
                return df.with_columns(_aligned=aligned)
            return df.with_columns(
                _aligned=aligned,
                _is_session=pl.col("ts").dt.date().is_in(cal.schedule["session"].implode()),
            )
        step = tf.seconds
        assert step is not None
        if cal is None:
            return df.with_columns(
                _aligned=pl.col("ts").dt.truncate(tf.polars_every) == pl.col("ts")
            )
        joined = df.with_columns(cal.local_dates(df["ts"]).alias("_day")).join(
            cal.schedule.select(
                pl.col("session").alias("_day"),
                pl.col("open").alias("_open"),
                pl.col("close").alias("_close"),
            ),
            on="_day",
            how="left",
            maintain_order="left",
        )
        offset_s = (pl.col("ts") - pl.col("_open")).dt.total_seconds()
        return joined.with_columns(
            _is_session=pl.col("_open").is_not_null(),
            _in_hours=(pl.col("ts") >= pl.col("_open")) & (pl.col("ts") < pl.col("_close")),
            # outside regular hours there is no session grid to check against
            _aligned=pl.when(pl.col("ts") >= pl.col("_open"))
            .then(offset_s % step == 0)
            .otherwise(pl.col("ts").dt.truncate(tf.polars_every) == pl.col("ts")),
        ).drop("_day", "_open", "_close")


def series_context(
    df: pl.DataFrame,
    actions: pl.DataFrame | None,
    settings: QualitySettings,
    *,
    gap: bool = True,
) -> pl.DataFrame:
    """Add the series flags (and `_gap_s`) to a frame sorted by (symbol, timeframe, ts)
    holding `_new` and `_valid`."""
    if df.height == 0:
        empty = [pl.lit(None, pl.Int64).alias("_gap_s")] if gap else []
        names = ("_spike", "_spike_pending", "_wick", "_stale", "_split_mismatch", "_split_jump")
        return df.with_columns([pl.lit(False).alias(c) for c in names] + empty)
    arrays = series_flags(series_columns(df), lambda: df, actions, settings)
    flags = [pl.Series(k, v) for k, v in arrays.items()]
    if not gap:
        return df.with_columns(flags)
    # seconds since the previous bar of the series (floor division, as numpy's)
    seconds = pl.col("ts").dt.epoch("us").diff() // 1_000_000
    return df.with_columns(*flags, _gap_s=pl.when(pl.col("_new")).then(None).otherwise(seconds))


def with_bad_prints(
    df: pl.DataFrame, settings: IntradaySettings, calendar: TradingCalendar | None = None
) -> pl.DataFrame:
    """Add `_bad_print` to a frame sorted by (symbol, timeframe, ts) holding `_new`, `_valid`
    and (for intraday rows with a calendar) `_in_hours`; false where it does not apply.

    With the `calendar`, a run of minutes that ends before its session's last minute (a
    batch that stops mid-session) leaves that last minute unjudged: whether it reverts is
    not known yet.
    """
    if df.is_empty() or "_in_hours" not in df.columns:
        return df.with_columns(_bad_print=pl.lit(False))
    use = df.select(
        ((pl.col("timeframe") == "1m") & pl.col("_in_hours") & pl.col("_valid"))
        .fill_null(False)
        .alias("u")
    )["u"].to_numpy()
    if not use.any():
        return df.with_columns(_bad_print=pl.lit(False))
    marks = bad_print_marks(
        df["ts"].dt.epoch("us").to_numpy(),
        _f64(df, "high"),
        _f64(df, "low"),
        _f64(df, "close"),
        _f64(df, "volume"),
        df["_new"].to_numpy(),
        use,
        settings,
        calendar.schedule["close"].dt.epoch("us").to_numpy() if calendar is not None else None,
    )
    return df.with_columns(_bad_print=pl.Series(marks))


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


def frame_day_scores(checked: pl.DataFrame, missing: pl.DataFrame, job_id: str) -> pl.DataFrame:
    """Day scores as one query: a group-by of (symbol, timeframe, date) and a join of the
    missing bars."""
    if checked.is_empty():
        return pl.DataFrame(schema=SCORE_SCHEMA)
    rejected = pl.col("_rejected").cast(pl.UInt32)
    flagged = (~pl.col("_rejected") & ((pl.col("quality_flags") & _SCORED_BITS) != 0)).cast(
        pl.UInt32
    )
    one_per_day = set(checked["timeframe"].unique().to_list()) <= {"1d", "1w", "1mo"}
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
        return out.select(SCORE_SCHEMA.names()).cast(SCORE_SCHEMA).collect()
    gaps = (
        missing.join(checked.select("symbol", "timeframe").unique(), on="symbol")
        .group_by("symbol", "timeframe", date=pl.col("ts").dt.date())
        .agg(missing=pl.len().cast(pl.UInt32))
    )
    out = (
        per_day.join(gaps.lazy(), on=["symbol", "timeframe", "date"], how="full", coalesce=True)
        .with_columns(pl.col("rows", "rejected", "flagged", "missing").fill_null(0))
        .with_columns(
            job_id=pl.lit(job_id),
            score=(good / (pl.col("rows") + pl.col("missing"))).clip(0.0, 1.0),
        )
    )
    return out.select(SCORE_SCHEMA.names()).cast(SCORE_SCHEMA).collect()
