"""Bad prints in 1-minute bars: a high, low or close far from its neighbours that reverts.

A bad print (an off-market or erroneous trade) shows up in a minute bar as a high, low or
close far from the minutes around it, gone again the next minute. The test is relative to
the neighbours, never to a fixed band:

- the reference is the median log close of the `window` minutes on each side (the bar
  itself left out), inside the same regular session of the same series;
- the scale is 1.4826 x the median |1-minute log return| among those neighbours (robust to
  the print itself), so quiet and busy stocks get their own thresholds;
- a bar is a bad print when its high (low, close) lies more than T = max(min_move, z x scale)
  beyond the reference while the minute before and the minute after stay within T / 2 of
  the reference: isolated and reverting. A level shift (news) moves the next minutes too:
  not flagged;
- the opening and closing auction minutes (the first and last minute of each regular-hours
  run) print away from continuous trading by design: their T is multiplied by
  `auction_factor`; a missing neighbour there counts as within. A run that ends before
  its session's close (a batch that stops mid-session) leaves its last minute unjudged:
  the minute that would show the revert has not come yet;
- a print on a volume surge (more than `_SURGE` x the neighbours' median volume) is a real
  sweep through the book, not a stray trade: not flagged.

Only regular-hours, valid 1-minute bars are judged (pre/post-market minutes are thin and
wide by nature, and flagged `outside_session` already). Cost: one pass of cheap numpy
comparisons finds the few candidates (a price outside both neighbouring closes by
`min_move`); the medians are taken on those rows only.
"""

from __future__ import annotations

import numpy as np

from quantivista.config import IntradaySettings

__all__ = ["bad_print_marks"]

_MAD_TO_SIGMA = 1.4826
_SURGE = 3.0  # volume over the neighbours' median that makes a wide print a real trade
_GAP_US = 3_600_000_000  # minutes further apart than this are not neighbours
_MINUTE_US = 60_000_000


def bad_print_marks(
    ts_us: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    new: np.ndarray,
    use: np.ndarray,
    settings: IntradaySettings,
    closes_us: np.ndarray | None = None,
    judge: np.ndarray | None = None,
) -> np.ndarray:
    """Return the bad-print mark of every row (see the module doc); rows not in `use` are
    neither judged nor neighbours. With the sessions' sorted closes (`closes_us`), the
    last minute of a run that is not its session's last minute is not judged. With
    `judge`, only the rows it marks are judged (the others are neighbours only: stored
    minutes before a batch, judged when they came)."""
    out = np.zeros(ts_us.size, dtype=bool)
    every = bool(use.all())  # the usual regular-hours batch: no gathers
    rows = np.arange(use.size) if every else np.flatnonzero(use)
    n = rows.size
    if n < 3:
        return out
    if every:
        t, h, lo, c, v = ts_us, high, low, close, volume
        breaks = new.copy()
    else:
        t, h, lo, c, v = ts_us[rows], high[rows], low[rows], close[rows], volume[rows]
        breaks = new[rows]
        breaks[1:] |= np.diff(rows) != 1
    # runs of consecutive judged rows of one series: a session's regular hours
    breaks[0] = True
    breaks[1:] |= np.diff(t) > _GAP_US
    first = np.flatnonzero(breaks)
    last = np.append(first[1:], n) - 1
    # candidates: a price outside both neighbouring closes by more than min_move. Inside
    # runs on whole arrays (a neighbour across a run's edge only adds or hides a candidate
    # at that edge); the edge rows get their own test against their one neighbour.
    up_by, down_by = 1 + settings.bad_print_min_move, 1 - settings.bad_print_min_move
    side = np.maximum(c[:-2], c[2:])
    up = h[1:-1] > side * up_by
    np.minimum(c[:-2], c[2:], out=side)
    up |= lo[1:-1] < side * down_by
    inner = np.flatnonzero(up) + 1
    edges = np.concatenate([first, last])
    nb = np.concatenate([np.minimum(first + 1, n - 1), np.maximum(last - 1, 0)])
    edge_hit = (h[edges] > c[nb] * up_by) | (lo[edges] < c[nb] * down_by)
    edge_rows = np.zeros(n, dtype=bool)
    edge_rows[edges] = True
    inner = inner[~edge_rows[inner]]
    cand = np.unique(np.concatenate([inner, edges[edge_hit]]))
    if judge is not None:
        cand = cand[judge[rows[cand]]]
    if not cand.size:
        return out
    if closes_us is not None:  # the next minute is still to come: no revert to see yet
        ends = cand[np.isin(cand, last)]
        after = np.searchsorted(closes_us, t[ends], side="right")
        close = closes_us[np.minimum(after, closes_us.size - 1)]
        cand = np.setdiff1d(cand, ends[t[ends] + _MINUTE_US != close], assume_unique=True)
    seg_first = first[np.searchsorted(first, cand, side="right") - 1]
    seg_last = last[np.searchsorted(first, cand, side="right") - 1]
    hit = _judge(cand, seg_first, seg_last, h, lo, c, v, settings)
    out[rows[cand[hit]]] = True
    return out


def _judge(
    cand: np.ndarray,
    seg_first: np.ndarray,
    seg_last: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    settings: IntradaySettings,
) -> np.ndarray:
    """Which candidates are bad prints: the exact test, on a (candidates x window) matrix."""
    k = settings.bad_print_window
    n = c.size
    offsets = np.concatenate([np.arange(-k, 0), np.arange(1, k + 1)])
    pos = cand[:, None] + offsets[None, :]
    inside = (pos >= seg_first[:, None]) & (pos <= seg_last[:, None])
    pos = np.clip(pos, 0, n - 1)
    edge = (cand == seg_first) | (cand == seg_last)
    with np.errstate(invalid="ignore", divide="ignore"):
        logc = np.where(inside, np.log(c[pos]), np.nan)
        ref = _row_median(logc)
        # returns between neighbours that are next to each other (none touches the bar)
        steps = np.abs(np.diff(logc, axis=1))
        steps[:, k - 1] = np.nan  # the step from the last bar before to the first after
        scale = _MAD_TO_SIGMA * _row_median(steps)
        vol_ref = _row_median(np.where(inside, v[pos], np.nan))
    threshold = np.fmax(settings.bad_print_min_move, settings.bad_print_z * scale)
    threshold = np.where(edge, threshold * settings.auction_factor, threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_h = np.log(h[cand]) - ref
        x_l = ref - np.log(lo[cand])
        x_c = np.abs(np.log(c[cand]) - ref)
        half = threshold / 2
        # the neighbours next to the bar: within half the threshold (missing: within)
        before = np.where(inside[:, k - 1], pos[:, k - 1], -1)
        after = np.where(inside[:, k], pos[:, k], -1)

        def calm(values: np.ndarray, sign: float) -> np.ndarray:
            ok = np.ones(cand.size, dtype=bool)
            for nb in (before, after):
                have = nb >= 0
                d = sign * (np.log(values[np.maximum(nb, 0)]) - ref)
                ok &= ~have | (d < half)
            return ok

        high_print = (x_h > threshold) & calm(h, 1.0)
        low_print = (x_l > threshold) & calm(lo, -1.0)
        close_print = (x_c > threshold) & _calm_close(c, before, after, ref, half)
        surge = v[cand] > _SURGE * vol_ref
    hit: np.ndarray = (high_print | low_print | close_print) & ~surge & np.isfinite(ref)
    return hit


def _row_median(values: np.ndarray) -> np.ndarray:
    """Median of each row, NaNs skipped (NaN for a row of NaNs): a sort, not numpy's masked
    nanmedian, which is slow on many short rows."""
    values = np.sort(values, axis=1)  # NaNs last
    count = values.shape[1] - np.isnan(values).sum(axis=1)
    at = np.arange(values.shape[0])
    lo = values[at, np.maximum(count - 1, 0) // 2]
    hi = values[at, np.maximum(count, 1) // 2 - (count == 0)]
    out: np.ndarray = np.where(count % 2 == 1, lo, (lo + hi) / 2.0)
    return np.where(count > 0, out, np.nan)


def _calm_close(
    c: np.ndarray, before: np.ndarray, after: np.ndarray, ref: np.ndarray, half: np.ndarray
) -> np.ndarray:
    ok = np.ones(ref.size, dtype=bool)
    for nb in (before, after):
        have = nb >= 0
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.abs(np.log(c[np.maximum(nb, 0)]) - ref)
        ok &= ~have | (d < half)
    return ok
