"""The synthetic live trade feed: its rate and its frames (one per tick)."""

from __future__ import annotations

import asyncio
import time

import polars as pl

from quantivista.processing.trade_bars import TRADE_SCHEMA
from quantivista.providers.live import synthetic_trades


def test_synthetic_trades_come_one_frame_a_tick_at_the_rate() -> None:
    """At 20,000 trades/s in 10 ms ticks, 0.3 s of feed is ~30 frames of ~200 trades: a
    frame a tick, not one whenever a trade is due (hundreds of frames of a few trades, the
    frame's fixed cost holding a stream's loop)."""

    async def take(seconds: float) -> tuple[list[pl.DataFrame], float]:
        frames = []
        feed = synthetic_trades(["AAA", "BBB"], rate=20_000, tick_s=0.01)
        began = time.monotonic()
        async for frame in feed:
            frames.append(frame)
            if time.monotonic() - began >= seconds:
                break
        took = time.monotonic() - began
        await feed.aclose()  # type: ignore[attr-defined]
        return frames, took

    frames, took = asyncio.run(take(0.3))
    trades = sum(f.height for f in frames)
    assert abs(trades - 20_000 * took) <= 20_000 * 0.02  # the rate, within two ticks
    assert len(frames) <= took / 0.01 + 1  # one a tick (at most: a late tick carries more)
    assert min(f.height for f in frames) >= 20_000 * 0.01 * 0.5
    assert all(f.schema == TRADE_SCHEMA for f in frames)


def test_synthetic_trades_stop_at_the_limit() -> None:
    async def take() -> list[pl.DataFrame]:
        return [f async for f in synthetic_trades(["AAA"], rate=50_000, tick_s=0.002, limit=500)]

    frames = asyncio.run(take())
    assert sum(f.height for f in frames) == 500
