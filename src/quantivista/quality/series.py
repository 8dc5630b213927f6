"""Per-series context for the rules that look along time: spikes, stale runs, split jumps, gaps.

The validator sorts a batch by (symbol, timeframe, ts) and marks the first row of each
series (`_new`) and the rows that passed every hard rule (`_valid`). Everything here is
numpy over those sorted columns (no `.over()` groups, no Python loops over rows):

- returns are log close-to-close between *valid* rows of the same series, adjusted on
  ex-dates by the known corporate actions (split ratio, cash dividend), so a real split or
  dividend is not a jump;
- the scale is 1.4826 x the rolling median of |return| over the previous `window` returns
  of the same series (a median absolute deviation around zero; daily median returns are ~0),
  floored at `min_scale`. Only rows whose return could pass k x scale need it exactly:
  window counts give every other row a lower bound that rules it out (`_scale_where`);
- a close spike is an isolated outlier: |z| > k on the bar and on the next bar, with
  opposite signs, and the two returns mostly cancel. The newest bar of a series has no
  next bar: |z| > k there is a pending spike, decided when the next bar arrives (the
  validator re-checks it as history). A level shift (a real jump) is not a spike; if
  its size matches a common split ratio and no action explains it, it is a split jump
  instead;
- a wick spike is a high or low far outside the body (open..close): beyond `wick_z` x the
  rolling mean wick of the previous bars and beyond `spike_z` x the return scale (e.g. Lean's IBM
  2000-07-20: low 88.00 against open 112.00 and close 117.00); only wicks past
  `spike_z` x `min_scale` can be one, so the mean wick is taken where they are.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import bottleneck as bn  # type: ignore[import-untyped]
import numpy as np
import polars as pl

from quantivista.config import QualitySettings

__all__ = [
    "SPLIT_RATIOS",
    "action_adjustments",
    "series_columns",
    "series_flags",
]

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


def _rolling_scale(a: np.ndarray, new: np.ndarray, window: int, floor: float) -> np.ndarray:
    """1.4826 x the median of the `window` values before each row in the same series.

    The whole-array reference of `_scale_where`, which the validator uses.
    """
    padded, pos = _padded(a, np.cumsum(new) - 1, window)
    med: np.ndarray = bn.move_median(padded, window, min_count=max(3, window // 2))
    out: np.ndarray = np.maximum(_MAD_TO_SIGMA * med[pos - 1], floor)  # window ends on row - 1
    return out


def _scale_where(
    a: np.ndarray, new: np.ndarray, window: int, floor: float, probe: np.ndarray, k: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return `_rolling_scale` where `probe > k x scale` may hold, a lower bound elsewhere.

    Also returns the rows where the scale is exact (sorted): the only rows where
    `probe > k x scale` can hold. The moving median is most of the cost of the series
    checks, and almost every row is ruled out without it. The scale is at least `floor`;
    beyond that, if more than half of a window's values are >= T, its median is >= T
    (window counts are differences of prefix sums), which bounds the scale by 1.4826 x T.
    Each series tries two levels of T (a half, then a quarter of its mean |value|) on the
    rows not yet bounded; the rows whose `probe` still exceeds k x their bound get the
    exact median of their window. Rounding is monotone, so `probe <= k x bound` implies
    `probe <= k x scale` bit for bit.
    """
    n = a.size
    starts = np.flatnonzero(new)
    lengths = np.diff(np.append(starts, n))
    out = np.full(n, floor)
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero(probe > k * floor)
    series = np.searchsorted(starts, rows, side="right") - 1
    lo = np.maximum(rows - window, starts[series])  # the window before each row, in its series
    seen = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(a == a, out=seen[1:])  # values present (not NaN)
    with np.errstate(invalid="ignore", divide="ignore"):  # fmax: NaN counts 0 (a >= 0)
        mean = np.add.reduceat(np.fmax(a, 0.0), starts) / np.diff(seen[[*starts, n]])
    above = np.zeros(n + 1, dtype=np.int32)
    exact = []
    for fraction in (0.5, 0.25):  # a row bounded by the higher level gains nothing from the lower
        level = fraction * mean
        with np.errstate(invalid="ignore"):
            np.cumsum(a >= np.repeat(level, lengths), out=above[1:])
        passed = 2 * (above[rows] - above[lo]) > seen[rows] - seen[lo]
        bounded = rows[passed]
        bound = np.maximum(_MAD_TO_SIGMA * level, floor)[series[passed]]
        out[bounded] = bound
        exact.append(bounded[probe[bounded] > k * bound])
        rows, series, lo = rows[~passed], series[~passed], lo[~passed]
    rows = np.sort(np.concatenate([*exact, rows]))  # and the rows no level could bound
    median = _median_before(a, rows, _series_start(rows, new), window, max(3, window // 2))
    out[rows] = np.maximum(_MAD_TO_SIGMA * median, floor)
    return out, rows


def _series_start(rows: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The first row of the series of each of `rows` (`new` marks series starts)."""
    starts = np.flatnonzero(new)
    out: np.ndarray = starts[np.searchsorted(starts, rows, side="right") - 1]
    return out


def _window(rows: np.ndarray, first: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The `window` rows before each of `rows` (a matrix, clipped at 0), and which of them
    are in the row's series (at or after its `first` row)."""
    pos = rows[:, None] + np.arange(-window, 0)[None, :]
    return np.maximum(pos, 0), pos >= first[:, None]


def _median_before(
    a: np.ndarray, rows: np.ndarray, first: np.ndarray, window: int, min_count: int
) -> np.ndarray:
    """Median of the `window` values before each of `rows` in its series, as bottleneck's.

    NaNs are skipped; fewer than `min_count` values give NaN; an even count averages the
    two middle values as `(lo + hi) / 2.0`, the formula of `bn.move_median`.
    """
    pos, inside = _window(rows, first, window)
    values = np.where(inside, a[pos], np.nan)
    values.sort(axis=1)  # NaNs last
    count = window - np.isnan(values).sum(axis=1)
    at = np.arange(rows.size)
    lo = values[at, np.maximum(count - 1, 0) // 2]
    hi = values[at, count // 2]
    med = np.where(count % 2 == 1, lo, (lo + hi) / 2.0)
    out: np.ndarray = np.where(count >= min_count, med, np.nan)
    return out


def _wick_before(
    stretch: np.ndarray, ok: np.ndarray, rows: np.ndarray, first: np.ndarray, window: int
) -> np.ndarray:
    """Mean log wick of the valid rows among the `window` before each of `rows`.

    NaN below max(3, window // 2) values. The numbers of `_rolling_mean` (bn.move_mean's
    running sum may differ from this sum in the last bits).
    """
    pos, inside = _window(rows, first, window)
    use = inside & ok[pos]
    logs = np.log(np.where(use, stretch[pos], 1.0))  # log 1 = 0 adds nothing
    count = use.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = logs.sum(axis=1) / count
    out: np.ndarray = np.where(count >= max(3, window // 2), mean, np.nan)
    return out


def _rolling_mean(a: np.ndarray, gid: np.ndarray, window: int, floor: float) -> np.ndarray:
    """Mean of the `window` values before each row in the same series (NaNs skipped).

    The whole-array wick scale: the validator takes it from `_wick_before` on the rows
    with a wick wide enough to matter, unless such rows are common.
    """
    padded, pos = _padded(a, gid, window)
    mean: np.ndarray = bn.move_mean(padded, window, min_count=max(3, window // 2))
    out: np.ndarray = np.maximum(mean[pos - 1], floor)
    return out


def _f64(df: pl.DataFrame, name: str) -> np.ndarray:
    col = df[name]
    if col.null_count():
        col = col.fill_null(np.nan)
    return col.to_numpy()


_PART_ROWS = 131_072
# above this share of rows with a wick past k x min_scale, the usual wick of every row
# (one rolling mean) is cheaper than the usual wick of each of those rows
_WIDE_SHARE = 1 / 16
_FLAGS = ("_spike", "_spike_pending", "_wick", "_stale", "_split_mismatch", "_split_jump")


def series_columns(df: pl.DataFrame) -> dict[str, np.ndarray]:
    """The numpy inputs of the series checks: `new`, `valid` and the five values (NaN for
    null)."""
    out = {k: _f64(df, k) for k in ("open", "high", "low", "close", "volume")}
    out["new"] = df["_new"].to_numpy()
    out["valid"] = df["_valid"].to_numpy()
    return out


def series_flags(
    cols: dict[str, np.ndarray],
    keys: Callable[[], pl.DataFrame],
    actions: pl.DataFrame | None,
    settings: QualitySettings,
) -> dict[str, np.ndarray]:
    """The flags of `series_context` (as numpy arrays) from `series_columns`-like arrays.

    `keys` returns (symbol, ts) of the rows, asked for only when known actions need them.
    For callers that assemble the rows from several frames without building one.
    """
    adjustments = _adjustments(actions)
    if not cols["new"].size:
        return {k: np.zeros(0, dtype=bool) for k in _FLAGS}
    ex_dates: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    if adjustments is not None:
        ex_dates = _on_ex_dates(keys(), cols["new"], adjustments)
    if cols["new"].size < 2 * _PART_ROWS:
        return _flags_of(cols, *ex_dates, settings)
    return _in_parts(cols, ex_dates, settings)


def _in_parts(
    cols: dict[str, np.ndarray],
    ex_dates: tuple[np.ndarray | None, np.ndarray | None],
    settings: QualitySettings,
) -> dict[str, np.ndarray]:
    """`_flags_of` on parts of about `_PART_ROWS` rows cut at series starts, on threads."""
    new = cols["new"]
    n = new.size
    starts = np.flatnonzero(new)
    at = np.searchsorted(starts, np.arange(_PART_ROWS, n, _PART_ROWS))
    cuts = np.unique(starts[np.minimum(at, len(starts) - 1)])
    bounds = [0, *[int(c) for c in cuts if 0 < c < n], n]
    ratio, cash = ex_dates

    def part(a: int, b: int) -> dict[str, np.ndarray]:
        sliced = {k: v[a:b] for k, v in cols.items()}
        if ratio is None or cash is None:
            return _flags_of(sliced, None, None, settings)
        return _flags_of(sliced, ratio[a:b], cash[a:b], settings)

    spans = list(itertools.pairwise(bounds))
    workers = min(max(1, pl.thread_pool_size()), len(spans))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(lambda ab: part(*ab), spans))
    # one chunk per new column, like the frame's own columns: misaligned chunks would
    # make every later select copy the whole frame
    return {k: np.concatenate([d[k] for d in done]) for k in done[0]}


def _adjustments(actions: pl.DataFrame | None) -> pl.DataFrame | None:
    return action_adjustments(actions) if actions is not None and actions.height else None


def _stale_rows(cols: tuple[np.ndarray, ...], new: np.ndarray, run_length: int) -> np.ndarray:
    """Rows that repeat the previous row of their series exactly, in runs of `run_length`+.

    Repeats are rare: the first column rules most rows out, the others are compared on
    the few candidates only.
    """
    n = new.size
    stale = np.zeros(n, dtype=bool)
    first = cols[0]
    same = np.zeros(n, dtype=bool)
    same[1:] = (first[1:] == first[:-1]) & ~new[1:]
    at = np.flatnonzero(same)
    for col in cols[1:]:
        if not at.size:
            return stale
        at = at[col[at] == col[at - 1]]
    if not at.size:
        return stale
    same = np.zeros(n, dtype=bool)
    same[at] = True
    run = np.cumsum(~same)
    lengths = np.bincount(run)
    stale[:] = same & (lengths[run] >= run_length)
    return stale


def _flags_of(
    cols: dict[str, np.ndarray],
    ratio: np.ndarray | None,
    cash: np.ndarray | None,
    settings: QualitySettings,
) -> dict[str, np.ndarray]:
    """The series flags of `series_columns` arrays, given the rows' ex-date adjustments."""
    new = cols["new"]
    n = new.size
    o, h, lo, c, v = (cols[k] for k in ("open", "high", "low", "close", "volume"))
    with np.errstate(invalid="ignore"):
        ok = cols["valid"] & (c > 0)  # NaN compares False
    all_ok = bool(ok.all())
    if all_ok:
        logc = np.log(c)
    else:
        logc = np.full(n, np.nan)
        logc[ok] = np.log(c[ok])

    r = np.empty(n)
    r[0] = np.nan
    if all_ok:  # the usual case: every row's previous valid row is the row before
        np.subtract(logc[1:], logc[:-1], out=r[1:])
        r[new] = np.nan
    else:
        r[1:] = np.nan
        start = np.maximum.accumulate(np.where(new, np.arange(n), 0))  # first row of the series
        prev = _prev_valid(ok)
        same_prev = ok & (prev >= start)
        r[same_prev] = logc[same_prev] - logc[prev[same_prev]]
    if ratio is not None and cash is not None:
        # undo the mechanical move of a known action: (close + cash) x ratio vs the previous
        adj = np.log(ratio) + np.log1p(np.divide(cash, c, out=np.zeros(n), where=ok))
        r_adj = r + adj
    else:
        r_adj = r

    abs_r = np.abs(r_adj)
    k = settings.spike_z
    window = settings.spike_window
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # the wick: log of the high over the body top or of the body bottom over the low
        stretch = np.maximum(np.minimum(o, c) / lo, h / np.maximum(o, c))
        # a wick spike needs wick > k x scale >= k x min_scale: only rows past that can be
        # one (the stretch test leaves room for the rounding of log and exp) ...
        least = k * settings.min_scale
        wide = np.flatnonzero(ok & (stretch > math.exp(least) * (1 - 1e-9)))
        if wide.size > n * _WIDE_SHARE:  # wide wicks are common: one pass over all rows
            wicks = np.where(ok, np.log(stretch), np.nan)
            usual = _rolling_mean(wicks, np.cumsum(new) - 1, window, settings.min_scale / 4)
            wide = wide[(wicks[wide] > least) & (wicks[wide] > settings.wick_z * usual[wide])]
            wick = wicks[wide]
        else:  # ... and far outside the usual (mean) wick of the bars before it
            wick = np.log(stretch[wide])
            keep = wick > least
            wide, wick = wide[keep], wick[keep]
            usual = _wick_before(stretch, ok, wide, _series_start(wide, new), window)
            keep = wick > settings.wick_z * np.maximum(usual, settings.min_scale / 4)
            wide, wick = wide[keep], wick[keep]
    # the return scale matters only where |return| or a wide wick may exceed k x scale
    probe = abs_r
    if wide.size:
        probe = abs_r.copy()
        probe[wide] = np.fmax(probe[wide], wick)
    scale, exact = _scale_where(abs_r, new, window, settings.min_scale, probe, k)
    spike = np.zeros(n, dtype=bool)
    pending = np.zeros(n, dtype=bool)
    split_jump = np.zeros(n, dtype=bool)
    split_mismatch = np.zeros(n, dtype=bool)
    wick_spike = np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # the few rows with an outsized return (elsewhere the scale is a bound that rules
        # it out): everything else is cheap to rule out
        big = exact[abs_r[exact] > k * scale[exact]]
        if all_ok:
            nxt = big + 1
            same_next = nxt < n
            same_next[same_next] = ~new[nxt[same_next]]
        else:
            nxt = _next_valid(ok)[big]
            same_next = nxt < n
            inside = np.flatnonzero(same_next)
            same_next[inside] = _series_start(nxt[inside], new) == _series_start(big[inside], new)
        nxt = np.minimum(nxt, n - 1)
        r_b = r_adj[big]
        r_next = np.where(same_next, r_adj[nxt], np.nan)
        spike[big] = (
            (np.abs(r_next) > k * scale[big])
            & (np.sign(r_b) != np.sign(r_next))
            & (np.abs(r_b + r_next) < 0.5 * np.minimum(np.abs(r_b), np.abs(r_next)))
        )
        # an outsized move with no next bar yet: a spike or a real move, undecided (unless
        # it is the way back from a spike on the bar before)
        last = big[~same_next]
        before = last - 1 if all_ok else _prev_valid(ok)[last]
        back = (before >= _series_start(last, new)) & spike[np.maximum(before, 0)]
        pending[last[~back]] = True
        jump = big[~spike[big]]
        if ratio is not None and cash is not None:
            jump = jump[(ratio[jump] == 1.0) & (cash[jump] == 0.0)]
            log_ratio = np.abs(np.log(ratio))
            split_mismatch = (ratio != 1.0) & (abs_r > 0.5 * log_ratio)
        dist = np.abs(np.abs(r[jump])[:, None] - np.log(np.asarray(SPLIT_RATIOS))[None, :])
        split_jump[jump] = dist.min(axis=1, initial=np.inf) < settings.split_tolerance
        pending &= ~split_jump  # a split-sized level shift is flagged as such already
        # far outside both the usual wick and the usual daily move
        wick_spike[wide] = wick > k * scale[wide]

    stale = _stale_rows((c, o, h, lo, v), new, settings.stale_run)
    return {
        "_spike": spike,
        "_spike_pending": pending,
        "_wick": wick_spike,
        "_stale": stale,
        "_split_mismatch": split_mismatch,
        "_split_jump": split_jump,
    }


def _on_ex_dates(
    df: pl.DataFrame, new: np.ndarray, adjustments: pl.DataFrame | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Split ratio and cash per share of each row (on the first row of an ex-date), or
    (None, None) when no known action changes a price in `df`."""
    if adjustments is None:
        return None, None
    n = df.height
    day = df.select(pl.col("symbol"), _date=pl.col("ts").dt.date())
    first_of_day = new | (day["_date"] != day["_date"].shift(1)).fill_null(True).to_numpy()
    rows = (
        day.with_row_index("_i")
        .filter(pl.Series(first_of_day))
        .join(adjustments, on=["symbol", "_date"], how="inner")
    )
    if not rows.height:
        return None, None
    ratio = np.ones(n)
    cash = np.zeros(n)
    at = rows["_i"].to_numpy().astype(np.int64)
    ratio[at] = rows["_ratio"].to_numpy()
    cash[at] = rows["_cash"].to_numpy()
    if not ((ratio != 1.0).any() or (cash != 0.0).any()):
        return None, None
    return ratio, cash
