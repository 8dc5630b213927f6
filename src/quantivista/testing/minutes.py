"""Synthetic regular-session 1-minute bars with real long wicks, news jumps and bad prints.

For measuring the bad-print rule (`quality.intraday`) and the validator's speed on minute
data. Per symbol and session: fat-tailed (Student t, 4 dof) minute returns with a U-shaped
volatility over the day, cent-rounded prices, U-shaped lognormal volume. Real events that
the rule must leave alone: long wicks that trade (a sweep: the wick comes with 2-6x the
usual volume) and news jumps (a level shift that stays). Injected bad prints: one high,
low or close moved 1-10% away for one minute, volume untouched.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from quantivista.model.schema import coerce_bars
from quantivista.reference.calendars import TradingCalendar

__all__ = ["inject_bad_prints", "session_minutes", "session_minutes_with_events"]

_MINUTES = 390


def session_minutes(
    calendar: TradingCalendar, start: str, end: str, symbols: int, *, seed: int = 19
) -> pl.DataFrame:
    """Canonical 1m bars of the full-length sessions in [start, end], sorted (symbol, ts)."""
    return session_minutes_with_events(calendar, start, end, symbols, seed=seed)[0]


def session_minutes_with_events(
    calendar: TradingCalendar,
    start: str,
    end: str,
    symbols: int,
    *,
    seed: int = 19,
    wick_rate: float = 0.001,
    jump_rate: float = 1 / 390,
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """`session_minutes`, and which rows carry a real long wick and a news jump."""
    table = calendar.session_table(start, end).filter(pl.col("minutes") == _MINUTES)
    days = table.height
    rng = np.random.default_rng(seed)
    shape = (symbols, days, _MINUTES)
    x = (np.arange(_MINUTES) + 0.5) / _MINUTES
    u_shape = 1.0 + 8.0 * (x - 0.5) ** 2  # 3x the midday volatility at the open and close
    sigma = rng.uniform(0.0004, 0.0015, size=(symbols, 1, 1)) * u_shape
    r = rng.standard_t(4, size=shape) * sigma / np.sqrt(2.0)  # t(4) has variance 2
    jumps = rng.random(shape) < jump_rate
    r += np.where(jumps, rng.choice([-1.0, 1.0], shape) * rng.uniform(0.01, 0.04, shape), 0.0)
    start_price = rng.uniform(15.0, 400.0, size=(symbols, 1))
    log_close = np.log(start_price) + np.cumsum(r.reshape(symbols, -1), axis=1)
    close = np.round(np.exp(log_close), 2).reshape(shape)
    gap = rng.normal(0.0, 2 * sigma[..., :1], size=(symbols, days, 1))
    opn = np.concatenate([close[..., :1] * np.exp(gap), close[..., :-1]], axis=2)
    opn = np.round(opn, 2)
    wiggle = np.abs(rng.standard_t(4, size=(2, *shape))) * sigma * 0.4
    high = np.round(np.maximum(opn, close) * (1 + wiggle[0]), 2)
    low = np.round(np.minimum(opn, close) * (1 - wiggle[1]), 2)
    volume = np.round(4_000 * u_shape * np.exp(rng.normal(0, 0.5, shape)))
    # real long wicks: 6-20 sigma out and back inside the minute, on 2-6x the volume
    wick = rng.random(shape) < wick_rate
    size = rng.uniform(6, 20, shape) * sigma
    up = rng.random(shape) < 0.5
    high = np.where(wick & up, np.round(high * (1 + size), 2), high)
    low = np.where(wick & ~up, np.round(low * (1 - size), 2), low)
    volume = np.where(wick, volume * rng.uniform(2, 6, shape), volume)
    opens = table["open"].dt.epoch("us").to_numpy()
    ts = (opens[:, None] + np.arange(_MINUTES)[None, :] * 60_000_000).ravel()
    frame = pl.DataFrame(
        {
            "symbol": np.repeat([f"M{i:04d}" for i in range(symbols)], days * _MINUTES),
            "ts": np.tile(ts, symbols),
            "open": opn.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": volume.ravel(),
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    bars = coerce_bars(frame, timeframe="1m", provider="synthetic")
    return bars, wick.ravel(), jumps.ravel()


def inject_bad_prints(
    bars: pl.DataFrame, rate: float, *, seed: int = 7
) -> tuple[pl.DataFrame, np.ndarray]:
    """Return `bars` with about `rate` of the rows carrying a bad print, and which rows."""
    rng = np.random.default_rng(seed)
    n = bars.height
    hit = rng.random(n) < rate
    kind = rng.integers(0, 3, n)  # 0 high, 1 low, 2 close
    size = rng.uniform(0.01, 0.10, n)
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    o, h, lo, c = (bars[k].to_numpy().copy() for k in ("open", "high", "low", "close"))
    bump_h = hit & (kind == 0)
    bump_l = hit & (kind == 1)
    bump_c = hit & (kind == 2)
    h[bump_h] = np.round(h[bump_h] * (1 + size[bump_h]), 2)
    lo[bump_l] = np.round(lo[bump_l] * (1 - size[bump_l]), 2)
    c[bump_c] = np.round(c[bump_c] * (1 + sign[bump_c] * size[bump_c]), 2)
    h = np.maximum(h, np.maximum(o, c))
    lo = np.minimum(lo, np.minimum(o, c))
    out = bars.with_columns(high=pl.Series(h), low=pl.Series(lo), close=pl.Series(c))
    return out, hit
