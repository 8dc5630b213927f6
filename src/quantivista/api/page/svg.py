"""Charts as inline SVG, drawn from Polars frames: candlesticks with volume, daily quality.

Pure functions: a frame in, geometry or markup out. Coordinates are computed with Polars
expressions and every candle's markup is built by one `pl.format` over the whole frame, so
no Python loop runs over the bars. Colours come from CSS classes (the page's stylesheet),
never from `style` attributes, so a strict Content-Security-Policy holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from html import escape

import polars as pl

__all__ = [
    "Box",
    "candle_geometry",
    "candles_svg",
    "nice_ticks",
    "quality_svg",
]


@dataclass(frozen=True)
class Box:
    """The drawing area of a chart, in SVG user units (the viewBox scales it to the page)."""

    width: float = 960.0
    height: float = 400.0
    left: float = 8.0
    right: float = 72.0  # room for the price axis on the right
    top: float = 12.0
    bottom: float = 24.0  # room for the date axis
    volume: float = 64.0  # height of the volume panel below the prices; 0 for none
    gap: float = 10.0  # between the price and volume panels

    @property
    def plot_width(self) -> float:
        """Return the width the bars share."""
        return self.width - self.left - self.right

    @property
    def price_height(self) -> float:
        """Return the height of the price panel."""
        return self.height - self.top - self.bottom - self.volume - (self.gap if self.volume else 0)

    @property
    def volume_top(self) -> float:
        """Return the y of the volume panel's top edge."""
        return self.top + self.price_height + self.gap


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Return round values (steps of 1, 2, 2.5 or 5 x 10^k) spanning [lo, hi], about `count`."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        return []
    if hi == lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    n = math.floor((hi - first) / step + 1e-9) + 1
    return [round(first + i * step, 10) for i in range(max(0, n))]


def _fixed(expr: pl.Expr, places: int) -> pl.Expr:
    """Format non-negative numbers with exactly `places` decimals (Polars has no printf)."""
    scaled = (expr * 10**places).round(0).cast(pl.Int64)
    if places == 0:
        text: pl.Expr = scaled.cast(pl.String)
        return text
    whole = (scaled // 10**places).cast(pl.String)
    part = (scaled % 10**places).cast(pl.String).str.zfill(places)
    return pl.format("{}.{}", whole, part)


def _places(low: float) -> int:
    return 4 if low < 1 else 2


def candle_geometry(bars: pl.DataFrame, box: Box = Box()) -> pl.DataFrame:
    """Return one row per bar with its drawing coordinates.

    `bars` holds ts, open, high, low, close and volume, sorted by ts. Added columns: `x`
    (the candle's centre), `half` (half the body width), `wick_top`/`wick_bottom` (high and
    low), `body_top`/`body_bottom` (the larger and smaller of open and close), `up`
    (close >= open) and `volume_top` (the volume bar's top; its bottom is the panel's).
    y grows downwards, as in SVG: `wick_top <= body_top <= body_bottom <= wick_bottom`.
    """
    n = bars.height
    if n == 0:
        return bars.with_columns(
            *(pl.lit(None, pl.Float64).alias(c) for c in _GEOMETRY_FLOATS),
            up=pl.lit(None, pl.Boolean),
        )
    lo, hi = bars.select(pl.col("low").min(), pl.col("high").max()).row(0)
    if hi <= lo:  # one flat price: give it a band to sit in
        lo, hi = lo - 0.5, hi + 0.5
    step = box.plot_width / n
    scale = box.price_height / (hi - lo)
    top_volume = bars.select(pl.col("volume").max()).item() or 0.0

    def y(expr: pl.Expr) -> pl.Expr:
        at: pl.Expr = box.top + (hi - expr) * scale
        return at

    volume_scale = box.volume / top_volume if top_volume > 0 else 0.0
    return bars.with_columns(
        x=box.left + (pl.int_range(pl.len(), dtype=pl.Int64) + 0.5) * step,
        half=pl.lit(max(0.5, min(step * 0.35, 8.0))),
        wick_top=y(pl.col("high")),
        wick_bottom=y(pl.col("low")),
        body_top=y(pl.max_horizontal("open", "close")),
        body_bottom=y(pl.min_horizontal("open", "close")),
        up=pl.col("close") >= pl.col("open"),
        volume_top=box.volume_top + box.volume - pl.col("volume").fill_null(0.0) * volume_scale,
    )


_GEOMETRY_FLOATS = (
    "x", "half", "wick_top", "wick_bottom", "body_top", "body_bottom", "volume_top",
)  # fmt: skip


def _r(name: str) -> pl.Expr:
    return pl.col(name).round(2)


def _candle_markup(geometry: pl.DataFrame, box: Box, places: int, stamp: str) -> str:
    """Return the <g class="candle"> elements of every bar (one vectorized format)."""
    body_height = pl.max_horizontal(pl.col("body_bottom") - pl.col("body_top"), pl.lit(1.0))
    title = pl.format(
        "{}  O {}  H {}  L {}  C {}  V {}",
        pl.col("ts").dt.strftime(stamp),
        *(_fixed(pl.col(c), places) for c in ("open", "high", "low", "close")),
        _fixed(pl.col("volume").fill_null(0.0), 0),
    )
    markup = pl.format(
        '<g class="candle {}"><title>{}</title>'
        '<line class="wick" x1="{}" x2="{}" y1="{}" y2="{}"/>'
        '<rect class="body" x="{}" y="{}" width="{}" height="{}"/>'
        '<rect class="vol" x="{}" y="{}" width="{}" height="{}"/></g>',
        pl.when(pl.col("up")).then(pl.lit("up")).otherwise(pl.lit("down")),
        title,
        _r("x"), _r("x"), _r("wick_top"), _r("wick_bottom"),
        (pl.col("x") - pl.col("half")).round(2), _r("body_top"),
        (pl.col("half") * 2).round(2), body_height.round(2),
        (pl.col("x") - pl.col("half")).round(2), _r("volume_top"),
        (pl.col("half") * 2).round(2),
        (box.volume_top + box.volume - pl.col("volume_top")).round(2),
    )  # fmt: skip
    return "".join(geometry.select(markup).to_series().to_list())


def _decimals(ticks: list[float]) -> int:
    """Return the decimals that tell the ticks apart (0 for 120, 140; 1 for 2.5, 5.0)."""
    if len(ticks) < 2:
        return 2
    step = ticks[1] - ticks[0]
    return next((d for d in range(7) if abs(round(step, d) - step) < 1e-9), 6)


def _price_axis(lo: float, hi: float, box: Box) -> str:
    scale = box.price_height / (hi - lo)
    ticks = nice_ticks(lo, hi, 6)
    places = _decimals(ticks)
    parts = []
    for tick in ticks:  # a handful
        y = round(box.top + (hi - tick) * scale, 2)
        parts.append(
            f'<line class="grid" x1="{box.left}" x2="{box.width - box.right}" y1="{y}" y2="{y}"/>'
            f'<text class="axis" x="{box.width - box.right + 6}" y="{y + 4}">'
            f"{tick:,.{places}f}</text>"
        )
    return "".join(parts)


def _date_axis(geometry: pl.DataFrame, box: Box, stamp: str) -> str:
    every = max(1, math.ceil(geometry.height / 8))
    marks = geometry.gather_every(every).select(
        pl.format(
            '<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text>',
            # keep the first and last labels inside the drawing
            pl.col("x").clip(box.left + 34, box.width - box.right - 34).round(2),
            pl.lit(round(box.height - 6, 2)),
            pl.col("ts").dt.strftime(stamp),
        )
    )
    return "".join(marks.to_series().to_list())


def _split_marks(geometry: pl.DataFrame, splits: pl.DataFrame, box: Box) -> str:
    """Return a dashed line and a label at the first bar on or after each split's ex-date."""
    if splits.height == 0:
        return ""
    days = geometry["ts"].dt.date()
    where = days.search_sorted(splits["ex_date"], side="left").to_list()
    parts = []
    for index, ratio in zip(where, splits["ratio"].to_list(), strict=True):  # a few splits
        if index >= geometry.height or index == 0:
            continue
        x = round(float(geometry["x"][index]) - float(geometry["half"][index]) * 1.4, 2)
        text = f"split {ratio:g}:1" if ratio >= 1 else f"reverse split 1:{1 / ratio:g}"
        parts.append(
            f'<line class="split" x1="{x}" x2="{x}" y1="{box.top}" '
            f'y2="{round(box.volume_top + box.volume, 2)}"/>'
            f'<text class="split-label" x="{x + 4}" y="{box.top + 12}">{escape(text)}</text>'
        )
    return "".join(parts)


def candles_svg(
    bars: pl.DataFrame,
    *,
    label: str,
    splits: pl.DataFrame | None = None,
    intraday: bool = False,
    box: Box = Box(),
) -> str:
    """Return a candlestick chart of `bars` (sorted by ts) with volume, as an <svg> element.

    `label` names the chart for screen readers (escaped here). `splits` (ex_date, ratio)
    are marked where they fall inside the range. Each candle carries a <title> with its
    date and prices, which browsers show on hover.
    """
    if bars.height == 0:
        raise ValueError("no bars to draw")
    geometry = candle_geometry(bars, box)
    lo, hi = bars.select(pl.col("low").min(), pl.col("high").max()).row(0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    places = _places(lo)
    stamp = "%Y-%m-%d %H:%M" if intraday else "%Y-%m-%d"
    axis_stamp = "%m-%d %H:%M" if intraday else "%Y-%m-%d"
    return (
        f'<svg class="chart candles" viewBox="0 0 {box.width:g} {box.height:g}" '
        f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}</title>"
        + _price_axis(lo, hi, box)
        + f'<line class="rule" x1="{box.left}" x2="{box.width - box.right}" '
        f'y1="{box.volume_top + box.volume}" y2="{box.volume_top + box.volume}"/>'
        + _split_marks(geometry, splits if splits is not None else _NO_SPLITS, box)
        + _candle_markup(geometry, box, places, stamp)
        + _date_axis(geometry, box, axis_stamp)
        + "</svg>"
    )


_NO_SPLITS = pl.DataFrame(schema={"ex_date": pl.Date, "ratio": pl.Float64})

QUALITY_BOX = Box(width=480.0, height=160.0, left=8.0, right=48.0, top=10.0, bottom=22.0,
                  volume=0.0)  # fmt: skip


def quality_svg(daily: pl.DataFrame, box: Box = QUALITY_BOX) -> str:
    """Return a column per day of daily mean quality scores (columns date, score, symbols).

    Each column is the score, topped by its shortfall from 1 in the warning colour, so a
    dip shows as colour rather than as a slightly shorter bar. The y axis starts at a round
    value below the lowest score, between 0.8 and 0.95: small dips stay visible, and a day
    below 0.8 is a full warning column (its title gives the exact score).
    """
    if daily.height == 0:
        raise ValueError("no scores to draw")
    lowest = float(daily["score"].min() or 0.0)  # type: ignore[arg-type]
    floor = max(0.8, min(0.95, math.floor(lowest * 20) / 20))
    scale = box.price_height / (1.0 - floor)
    step = box.plot_width / daily.height
    half = max(0.5, min(step * 0.4, 10.0))
    score_top = box.top + (1.0 - pl.col("score").clip(floor, 1.0)) * scale
    base = box.top + box.price_height
    x = (box.left + (pl.int_range(pl.len(), dtype=pl.Int64) + 0.5) * step - half).round(2)
    width = pl.lit(round(half * 2, 2))
    markup = pl.format(
        '<g class="qday {}"><title>{}: mean score {} over {} symbols</title>'
        '<rect class="qbar" x="{}" y="{}" width="{}" height="{}"/>'
        '<rect class="qgap" x="{}" y="{}" width="{}" height="{}"/></g>',
        pl.when(pl.col("score") < 0.99).then(pl.lit("dip")).otherwise(pl.lit("ok")),
        pl.col("date").dt.strftime("%Y-%m-%d"),
        _fixed(pl.col("score"), 4),
        pl.col("symbols"),
        x, score_top.round(2), width, (base - score_top).round(2),
        x, pl.lit(box.top), width, (score_top - box.top).round(2),
    )  # fmt: skip
    days = daily.select(markup)
    levels = [(t, round(box.top + (1.0 - t) * scale, 2)) for t in nice_ticks(floor, 1.0, 3)]
    ticks = "".join(
        f'<line class="grid" x1="{box.left}" x2="{box.width - box.right}" y1="{y}" y2="{y}"/>'
        f'<text class="axis" x="{box.width - box.right + 4}" y="{y + 4}">{t:.2f}</text>'
        for t, y in levels
    )
    first: date = daily["date"][0]
    last: date = daily["date"][-1]
    return (
        f'<svg class="chart quality" viewBox="0 0 {box.width:g} {box.height:g}" role="img" '
        f'aria-label="daily mean quality score" xmlns="http://www.w3.org/2000/svg">'
        + ticks
        + "".join(days.to_series().to_list())
        + f'<text class="axis" x="{box.left}" y="{box.height - 6}">{first:%Y-%m-%d}</text>'
        f'<text class="axis" x="{box.width - box.right}" y="{box.height - 6}" '
        f'text-anchor="end">{last:%Y-%m-%d}</text></svg>'
    )
