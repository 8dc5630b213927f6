"""Per-series context for the rules that look along time: spikes, stale runs, split jumps, gaps.

The validator sorts a batch by (symbol, timeframe, ts) and marks the first row of each
series (`_new`) and the rows that passed every hard rule (`_valid`). Everything here is
numpy over those sorted columns (no `.over()` groups, no Python loops over rows):

- returns are log close-to-close between *valid* rows of the same series, adjusted on
  ex-dates by the known corporate actions (split ratio, cash dividend), so a real split or
  dividend is not a jump;
- the scale is 1.4826 x the rolling median of |return| over the previous `window` returns
  of the same series (a median absolute deviation around zero; daily median returns are ~0),
  floored at `min_scale`; series are padded apart so a window never spans two series;
- a close spike is an isolated outlier: |z| > k on the bar and on the next bar, with
  opposite signs, and the two returns mostly cancel. A level shift (a real jump) is not a
  spike; if its size matches a common split ratio and no action explains it, it is a
  split jump instead;
- a wick spike is a high or low far outside the body (open..close): beyond `wick_z` x the
  rolling mean wick of the previous bars and beyond `spike_z` x the return scale (e.g. Lean's IBM
  2000-07-20: low 88.00 against open 112.00 and close 117.00).
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import bottleneck as bn  # type: ignore[import-untyped]
import numpy as np
import polars as pl

from quantivista.config import QualitySettings

__all__ = ["SPLIT_RATIOS", "action_adjustments", "series_context"]

# common split and reverse-split ratios (new shares per old share, > 1)
SPLIT_RATIOS = (1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0, 10.0, 15.0, 20.0)
_MAD_TO_SIGMA = 1.4826
_SPLIT_TYPES = ("split", "stock_dividend")
_CASH_TYPES = ("dividend", "special_dividend")


def action_adjustments(actions: pl.DataFrame) -> pl.DataFrame:
    """Return (symbol, _date, _ratio, _cash) per ex-date: product of split ratios, sum of cash."""
    return (
        actions.filter(pl.col("action_type").is_in([*_SPLIT_TYPES, *_CASH_TYPES]))
        .group_by("symbol", pl.col("ex_date").alias("_date"))
        .agg(
            _ratio=pl.when(pl.col("action_type").is_in(_SPLIT_TYPES))
            .then(pl.col("ratio").fill_null(1.0))
            .otherwise(1.0)
            .product(),
            _cash=pl.when(pl.col("action_type").is_in(_CASH_TYPES))
            .then(pl.col("amount").fill_null(0.0))
            .otherwise(0.0)
            .sum(),
        )
    )


def _prev_valid(ok: np.ndarray) -> np.ndarray:
    """Index of the last valid row strictly before each row (-1 if none)."""
    idx = np.where(ok, np.arange(ok.size), -1)
    last = np.maximum.accumulate(idx)
    out = np.empty_like(last)
    out[0] = -1
    out[1:] = last[:-1]
    return out


def _next_valid(ok: np.ndarray) -> np.ndarray:
    """Index of the first valid row strictly after each row (n if none)."""
    n = ok.size
    idx = np.where(ok, np.arange(n), n)
    first = np.minimum.accumulate(idx[::-1])[::-1]
    out = np.empty_like(first)
    out[-1] = n
    out[:-1] = first[1:]
    return out


def _padded(a: np.ndarray, gid: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Place each series' values `window` NaNs apart, so no window spans two series."""
    pos = np.arange(a.size) + gid * window
    padded = np.full(a.size + (int(gid[-1]) + 1) * window, np.nan)
    padded[pos] = a
    return padded, pos


def _rolling_scale(a: np.ndarray, gid: np.ndarray, window: int, floor: float) -> np.ndarray:
    """1.4826 x the median of the `window` values before each row in the same series."""
    padded, pos = _padded(a, gid, window)
    med: np.ndarray = bn.move_median(padded, window, min_count=max(3, window // 2))
    prev: np.ndarray = med[pos - 1]  # the window ending on the previous row
    out: np.ndarray = np.maximum(_MAD_TO_SIGMA * prev, floor)
    return out


def _rolling_mean(a: np.ndarray, gid: np.ndarray, window: int, floor: float) -> np.ndarray:
    """Mean of the `window` values before each row in the same series (NaNs skipped)."""
    padded, pos = _padded(a, gid, window)
    mean: np.ndarray = bn.move_mean(padded, window, min_count=max(3, window // 2))
    out: np.ndarray = np.maximum(mean[pos - 1], floor)
    return out


def _f64(df: pl.DataFrame, name: str) -> np.ndarray:
    col = df[name]
    if col.null_count():
        col = col.fill_null(np.nan)
    return col.to_numpy()


_PARALLEL_MIN_ROWS = 200_000


def series_context(
    df: pl.DataFrame, actions: pl.DataFrame | None, settings: QualitySettings
) -> pl.DataFrame:
    """Add `_spike`, `_wick`, `_stale`, `_split_mismatch`, `_split_jump`, `_gap_s` to `df`.

    `df` must be sorted by (symbol, timeframe, ts) and hold `_new` and `_valid`. Large
    frames are cut at series boundaries and the parts run on Polars' thread count
    (numpy and bottleneck release the GIL), since series never interact.
    """
    workers = pl.thread_pool_size()
    if df.height < _PARALLEL_MIN_ROWS or workers < 2:
        return _series_context(df, actions, settings)
    starts = np.flatnonzero(df["_new"].to_numpy())
    at = np.searchsorted(starts, np.linspace(0, df.height, workers + 1)[1:-1])
    cuts = np.unique(starts[np.minimum(at, len(starts) - 1)])
    bounds = [0, *[int(c) for c in cuts if 0 < c < df.height], df.height]
    if len(bounds) < 3:
        return _series_context(df, actions, settings)
    parts = [df.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        done = list(pool.map(lambda part: _series_context(part, actions, settings), parts))
    return pl.concat(done, rechunk=False)


def _series_context(
    df: pl.DataFrame, actions: pl.DataFrame | None, settings: QualitySettings
) -> pl.DataFrame:
    n = df.height
    if n == 0:
        return df.with_columns(
            [pl.lit(False).alias(c) for c in ("_spike", "_wick", "_stale")]
            + [pl.lit(False).alias(c) for c in ("_split_mismatch", "_split_jump")]
            + [pl.lit(None, pl.Int64).alias("_gap_s")]
        )
    new = df["_new"].to_numpy()
    gid = np.cumsum(new) - 1
    o, h, lo, c, v = (_f64(df, k) for k in ("open", "high", "low", "close", "volume"))
    ok = df["_valid"].to_numpy() & (c > 0)  # NaN compares False
    logc = np.full(n, np.nan)
    logc[ok] = np.log(c[ok])

    ratio = np.ones(n)
    cash = np.zeros(n)
    if actions is not None and actions.height:
        day = df.select(pl.col("symbol"), _date=pl.col("ts").dt.date())
        first_of_day = new | (day["_date"] != day["_date"].shift(1)).fill_null(True).to_numpy()
        rows = (
            day.with_row_index("_i")
            .filter(pl.Series(first_of_day))
            .join(action_adjustments(actions), on=["symbol", "_date"], how="inner")
        )
        if rows.height:
            at = rows["_i"].to_numpy().astype(np.int64)
            ratio[at] = rows["_ratio"].to_numpy()
            cash[at] = rows["_cash"].to_numpy()

    r = np.full(n, np.nan)
    if ok.all():  # the usual case: every row's previous valid row is the row before
        r[1:] = logc[1:] - logc[:-1]
        r[new] = np.nan
    else:
        start = np.maximum.accumulate(np.where(new, np.arange(n), 0))  # first row of the series
        prev = _prev_valid(ok)
        same_prev = ok & (prev >= start)
        r[same_prev] = logc[same_prev] - logc[prev[same_prev]]
    has_action = bool((ratio != 1.0).any() or (cash != 0.0).any())
    if has_action:
        # undo the mechanical move of a known action: (close + cash) x ratio vs the previous
        adj = np.log(ratio) + np.log1p(np.divide(cash, c, out=np.zeros(n), where=ok))
        r_adj = r + adj
    else:
        r_adj = r

    scale = _rolling_scale(np.abs(r_adj), gid, settings.spike_window, settings.min_scale)
    k = settings.spike_z
    spike = np.zeros(n, dtype=bool)
    split_jump = np.zeros(n, dtype=bool)
    split_mismatch = np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # the few rows with an outsized return: everything else is cheap to rule out
        big = np.flatnonzero(np.abs(r_adj) > k * scale)
        nxt = _next_valid(ok)[big]
        same_next = (nxt < n) & (gid[np.minimum(nxt, n - 1)] == gid[big])
        r_b = r_adj[big]
        r_next = np.where(same_next, r_adj[np.minimum(nxt, n - 1)], np.nan)
        spike[big] = (
            (np.abs(r_next) > k * scale[big])
            & (np.sign(r_b) != np.sign(r_next))
            & (np.abs(r_b + r_next) < 0.5 * np.minimum(np.abs(r_b), np.abs(r_next)))
        )
        jump = big[~spike[big] & (ratio[big] == 1.0) & (cash[big] == 0.0)]
        dist = np.abs(np.abs(r[jump])[:, None] - np.log(np.asarray(SPLIT_RATIOS))[None, :])
        split_jump[jump] = dist.min(axis=1, initial=np.inf) < settings.split_tolerance
        if has_action:
            log_ratio = np.abs(np.log(ratio))
            split_mismatch = (ratio != 1.0) & (np.abs(r_adj) > 0.5 * log_ratio)

        wick = np.log(np.maximum(np.minimum(o, c) / lo, h / np.maximum(o, c)))
        wick_scale = _rolling_mean(
            np.where(ok, wick, np.nan), gid, settings.spike_window, settings.min_scale / 4
        )
        # far outside both the usual wick and the usual daily move
        wick_spike = ok & (wick > settings.wick_z * wick_scale) & (wick > k * scale)

    same = np.zeros(n, dtype=bool)
    same[1:] = ~new[1:]
    for col in (o, h, lo, c, v):
        same[1:] &= col[1:] == col[:-1]
    run = np.cumsum(~same)
    lengths = np.bincount(run)
    stale = same & (lengths[run] >= settings.stale_run)

    ts_us = df["ts"].dt.epoch("us").to_numpy()
    gap = np.zeros(n, dtype=np.int64)
    gap[1:] = (ts_us[1:] - ts_us[:-1]) // 1_000_000
    return df.with_columns(
        _spike=pl.Series(spike),
        _wick=pl.Series(wick_spike),
        _stale=pl.Series(stale),
        _split_mismatch=pl.Series(split_mismatch),
        _split_jump=pl.Series(split_jump),
        _gap_s=pl.when(pl.Series(new)).then(None).otherwise(pl.Series(gap)),
    )
