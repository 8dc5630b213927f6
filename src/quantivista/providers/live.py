"""Live trade feeds as async iterators of trade frames (symbol, ts, price, size, provider).

- `synthetic_trades`: a seeded random walk per symbol at a given rate, stamped with the clock;
  a fraction of trades arrives late (stamped up to 90 s in the past) to exercise corrections.
- `finnhub_trades`: the Finnhub WebSocket client's trades, one frame per arrival burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

import numpy as np
import polars as pl

from quantivista.providers.finnhub import FinnhubTradeStream

__all__ = ["TRADE_COLUMNS", "finnhub_trades", "synthetic_trades"]

TRADE_COLUMNS = ("symbol", "ts", "price", "size", "provider")


async def synthetic_trades(
    symbols: Sequence[str],
    *,
    rate: float,
    seed: int = 7,
    late_fraction: float = 0.0,
    tick_s: float = 0.01,
    limit: int | None = None,
    time_scale: float = 1.0,
) -> AsyncIterator[pl.DataFrame]:
    """Yield about `rate` trades a second in frames of one tick (`tick_s`), until `limit`.

    Trades are stamped with the clock; `time_scale` > 1 runs event time that many times
    faster than the clock from the start (minutes close sooner: for benchmarks and demos).
    """
    rng = np.random.default_rng(seed)
    names = pl.Series("symbol", list(symbols), dtype=pl.String)
    prices = rng.uniform(20, 500, len(names))
    provider = pl.Series("provider", ["synthetic"], dtype=pl.String)
    sent = 0
    started = time.monotonic()
    origin_us = int(time.time() * 1e6)
    last = started
    while limit is None or sent < limit:
        # a frame a tick at most: what came due since the last (yielding whenever a trade
        # was due made a frame of a few trades per loop turn, its fixed cost holding the
        # loop); the rate holds over the whole run, however late a tick comes
        await asyncio.sleep(max(0.0, last + tick_s - time.monotonic()))
        last = time.monotonic()
        due = int(rate * (last - started)) - sent
        if limit is not None:
            due = min(due, limit - sent)
        if due <= 0:
            continue
        which = rng.integers(0, len(names), due)
        prices *= np.exp(rng.normal(0, 2e-4, len(names)))
        now_us = origin_us + int((time.time() * 1e6 - origin_us) * time_scale)
        stamps = np.full(due, now_us, dtype=np.int64)
        if late_fraction:
            late = rng.random(due) < late_fraction
            stamps[late] -= rng.integers(1_000_000, 90_000_000, int(late.sum()))
        # columns built in numpy / plain Series calls: no Python object per trade, and no
        # expression (each runs a query plan: 4x the cost of the frame at 40 trades a tick)
        yield pl.DataFrame(
            {
                "symbol": names[which],
                "ts": pl.Series(stamps, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                "price": np.round(prices[which] * np.exp(rng.normal(0, 1e-4, due)), 4),
                "size": rng.integers(1, 500, due).astype(np.float64),
                "provider": provider.new_from_index(0, due),
            }
        )
        sent += due


async def finnhub_trades(
    stream: FinnhubTradeStream, *, max_wait_s: float = 0.02, max_trades: int = 10_000
) -> AsyncIterator[pl.DataFrame]:
    """Yield the stream's trades as frames: what arrived within `max_wait_s` of the first."""
    frames = stream.frames()
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[pl.DataFrame] | None = None
    batch: list[pl.DataFrame] = []
    rows = 0
    deadline = 0.0
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(frames))
            if not batch:
                batch.append(await pending)
                rows, pending = batch[0].height, None
                deadline = loop.time() + max_wait_s
                continue
            wait = deadline - loop.time()
            if wait > 0 and rows < max_trades:
                done, _ = await asyncio.wait({pending}, timeout=wait)
                if done:
                    batch.append(pending.result())
                    rows += batch[-1].height
                    pending = None
                    continue
            yield batch[0] if len(batch) == 1 else pl.concat(batch, rechunk=False)
            batch = []
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        await frames.aclose()  # type: ignore[attr-defined]
