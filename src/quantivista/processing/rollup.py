"""Multi-timeframe storage: 1-minute base bars rolled up to 5m, 15m, 1h and 1d by session.

Only the exchange's regular session counts (opens and closes from the calendar, early
closes included): a minute belongs to the session of its exchange-local date and rolls up
only if `open <= ts < close`. Pre- and post-market minutes stay stored (flagged
`outside_session` by the validator) and, with `session="extended"`, roll up into separate
intraday bars of their own: pre-market buckets tile backwards from the open, post-market
buckets forwards from the close, so no bar ever spans the open or the close (a split or
dividend takes effect at the open of its ex-date: no bar mixes pre- and post-action
prices). Those bars carry `outside_session`; daily bars are always the regular session.

Intraday buckets tile each session from its open (09:30-10:30, ..., 15:30-16:00 for 1h on
NYSE: the last bucket may be short); daily bars are stamped at 00:00 UTC of the session
date, like provider daily bars. Aggregation: first open, max high, min low, last close,
summed volume and trades, volume-weighted vwap, OR of quality flags; a rolled-up bar's
`ingested_at` is the newest of its inputs, so as-of reads of derived timeframes agree with
the base bars they come from. When base bars change, only their sessions are rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Literal, get_args

import polars as pl

from quantivista.errors import InvalidInputError
from quantivista.model.flags import QualityFlag
from quantivista.model.schema import BAR_COLUMNS
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.reference.calendars import TradingCalendar
from quantivista.storage.base import BarStore, UpsertStats
from quantivista.timeutil import day_start_utc

__all__ = ["DEFAULT_TARGETS", "Rollup", "Session", "check_session", "rollup"]

Session = Literal["regular", "extended"]
DEFAULT_TARGETS: tuple[str, ...] = ("5m", "15m", "1h", "1d")
_BASE = Timeframe.parse("1m")
_OUTSIDE = int(QualityFlag.OUTSIDE_SESSION)


def check_session(session: str) -> Session:
    """Return `session` if it is "regular" or "extended", else raise `InvalidInputError`."""
    if session not in get_args(Session):
        raise InvalidInputError("session must be 'regular' or 'extended'", session=session)
    return session  # type: ignore[return-value]


def _with_sessions(base: pl.DataFrame, calendar: TradingCalendar) -> pl.DataFrame:
    """Add `_session` (exchange-local date), its UTC `_open` and `_close` (null: no session)."""
    table = calendar.schedule.select(
        pl.col("session").alias("_session"),
        pl.col("open").alias("_open"),
        pl.col("close").alias("_close"),
    )
    return base.with_columns(calendar.local_dates(base["ts"]).alias("_session")).join(
        table, on="_session", how="left", maintain_order="left"
    )


def _step_of(base: pl.DataFrame) -> int:
    """Seconds of the base bars' timeframe (1m when the frame does not say)."""
    if base.is_empty() or "timeframe" not in base.columns:
        return 60
    tf = Timeframe.parse(str(base["timeframe"][0]))
    if not tf.is_intraday or tf.seconds is None:
        raise ValueError(f"cannot roll up {tf} bars: the base must be intraday")
    return tf.seconds


def rollup(
    base: pl.DataFrame,
    calendar: TradingCalendar,
    timeframe: TimeframeLike,
    *,
    session: Session = "regular",
) -> pl.DataFrame:
    """Return intraday `base` bars (canonical schema, any symbols) rolled up to `timeframe`.

    `session="regular"` keeps the regular session only; "extended" adds pre- and
    post-market bars (intraday targets only, flagged `outside_session`). The base is
    usually 1m; any intraday base finer than the target works (e.g. 30m vendor bars).
    """
    tf = Timeframe.parse(timeframe)
    text = str(tf)
    check_session(session)
    step_in = _step_of(base)
    keyed = _with_sessions(base, calendar)
    ts, opens, closes = pl.col("ts"), pl.col("_open"), pl.col("_close")
    regular = (ts >= opens) & (ts < closes)
    if text == "1d":
        keyed = keyed.filter(regular)
        bucket = pl.col("_session").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        outside = pl.lit(0, pl.UInt32)
    elif tf.is_intraday and tf.seconds is not None and tf.seconds > step_in:
        step = tf.seconds
        # extended minutes tile away from the session's edges: backwards from the open,
        # forwards from the close (floor division of a negative offset goes backwards)
        keyed = keyed.filter(regular if session == "regular" else opens.is_not_null())
        anchor = pl.when(ts >= closes).then(closes).otherwise(opens)
        offset = ((ts - anchor).dt.total_seconds() // step) * step
        bucket = anchor + pl.duration(seconds=offset)
        outside = pl.when(regular).then(0).otherwise(_OUTSIDE).cast(pl.UInt32)
    else:
        raise ValueError(f"cannot roll {step_in}s bars up to {text}")
    vol = pl.col("volume")
    return (
        keyed.with_columns(_bucket=bucket, _outside=outside)
        .sort("symbol", "ts")
        .group_by("symbol", "_bucket", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            vol.sum(),
            ((pl.col("vwap").fill_null(pl.col("close")) * vol).sum() / vol.sum()).alias("vwap"),
            pl.col("trades").sum(),
            pl.col("provider").first(),
            (pl.col("quality_flags") | pl.col("_outside")).bitwise_or(),
            pl.col("ingested_at").max(),
            pl.col("job_id").sort_by("ingested_at").last(),
        )
        .with_columns(
            ts=pl.col("_bucket"),
            timeframe=pl.lit(text),
            vwap=pl.when(pl.col("volume") > 0).then("vwap").otherwise(None),
        )
        .select(BAR_COLUMNS)
    )


class Rollup:
    """Keep derived timeframes consistent with the 1-minute bars of a store."""

    def __init__(
        self,
        store: BarStore,
        calendar: TradingCalendar,
        targets: Sequence[str] = DEFAULT_TARGETS,
        *,
        session: Session = "regular",
    ) -> None:
        self.store = store
        self.calendar = calendar
        self.targets = [str(Timeframe.parse(t)) for t in targets]
        self.session = check_session(session)

    def refresh(self, changed: pl.DataFrame) -> UpsertStats:
        """Rebuild the derived bars of every (symbol, session) touched by `changed` 1m bars."""
        total = UpsertStats()
        base = changed.filter(pl.col("timeframe") == str(_BASE))
        if base.is_empty() or not self.targets:
            return total
        touched = (
            _with_sessions(base.select("symbol", "ts"), self.calendar)
            .select("symbol", "_session")
            .unique()
        )
        for (symbol,), part in touched.group_by("symbol", maintain_order=True):
            sessions = part["_session"]
            lo = day_start_utc(sessions.min()) - timedelta(days=1)  # type: ignore[arg-type]
            hi = day_start_utc(sessions.max()) + timedelta(days=2)  # type: ignore[arg-type]
            minutes = self.store.read([str(symbol)], _BASE, lo, hi)
            minutes = _with_sessions(minutes, self.calendar).filter(
                pl.col("_session").is_in(sessions.implode())
            )
            minutes = minutes.select(BAR_COLUMNS)
            if minutes.is_empty():
                continue
            derived = [
                rollup(minutes, self.calendar, t, session=self.session) for t in self.targets
            ]
            total += self.store.upsert(pl.concat(derived))
        return total
