"""The series pass: cut-up runs equal one run, and the shortcuts equal the whole-array maths."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.config import QualitySettings
from quantivista.quality import series
from quantivista.quality.series import (
    _adjustments,
    _flags_of,
    _median_before,
    _on_ex_dates,
    _rolling_mean,
    _rolling_scale,
    _scale_where,
    _series_start,
    _wick_before,
    series_columns,
    series_flags,
)

from .conftest import inject_spikes, lean_daily


def _copies(count: int) -> pl.DataFrame:
    base = lean_daily("ibm")
    spiked, _ = inject_spikes(base, count=40, seed=5)
    frames = [spiked.with_columns(symbol=pl.lit(f"S{i:02d}")) for i in range(count)]
    return pl.concat(frames).with_columns(
        _new=pl.col("symbol") != pl.col("symbol").shift(1).fill_null(""),
        _valid=pl.lit(True),
    )


def _in_parts(df: pl.DataFrame, actions: pl.DataFrame | None) -> pl.DataFrame:
    """The series flags as the validator takes them (cut into parts when large)."""
    flags = series_flags(series_columns(df), lambda: df, actions, QualitySettings())
    return pl.DataFrame(flags)


def _one_part(df: pl.DataFrame, actions: pl.DataFrame | None) -> pl.DataFrame:
    """The series flags of the whole frame in one part."""
    cols = series_columns(df)
    ratio, cash = _on_ex_dates(df, cols["new"], _adjustments(actions))
    return pl.DataFrame(_flags_of(cols, ratio, cash, QualitySettings()))


def test_parallel_split_matches_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    df = _copies(40)
    monkeypatch.setattr(series, "_PART_ROWS", 50_000)
    assert df.height > 4 * series._PART_ROWS
    par = _in_parts(df, None)
    ser = _one_part(df, None)
    assert par.equals(ser)
    assert par["_spike"].sum() >= 40 * 30  # the injected spikes, found in every copy


def test_small_parts_with_actions_and_invalid_rows_match_one_part(
    monkeypatch: pytest.MonkeyPatch, ibm: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    _, actions = ibm
    df = _copies(6)
    rng = np.random.default_rng(4)
    df = df.with_columns(
        _valid=pl.Series(rng.random(df.height) > 0.02),
        low=pl.when(pl.Series(rng.random(df.height) < 0.003))
        .then(pl.min_horizontal("open", "close") * 0.8)
        .otherwise("low"),
    )
    adjusted = pl.concat([actions.with_columns(symbol=pl.lit(f"S{i:02d}")) for i in range(6)])
    monkeypatch.setattr(series, "_PART_ROWS", 1000)  # many parts, cut at series starts
    parts = _in_parts(df, adjusted)
    whole = _one_part(df, adjusted)
    assert parts.equals(whole)
    assert parts["_wick"].sum() > 0


def _returns(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """|returns| of a few series: heavy tails, volatility regimes, NaN gaps, short series."""
    lengths = draw(st.lists(st.integers(1, 120), min_size=1, max_size=6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    vol = np.repeat(rng.choice([0.001, 0.01, 0.05], len(lengths)), lengths)
    a = np.abs(rng.standard_t(3, n)) * vol * rng.choice([0.5, 1.0, 3.0], n)
    a[rng.random(n) < draw(st.sampled_from([0.0, 0.05, 0.3]))] = np.nan
    a[rng.random(n) < 0.02] = 0.0
    new = np.zeros(n, dtype=bool)
    new[np.cumsum([0, *lengths[:-1]])] = True
    a[new] = np.nan  # no return on a series' first row
    return a, new


@settings(max_examples=150, deadline=None)
@given(st.data(), st.sampled_from([5, 8, 20]), st.sampled_from([2.0, 6.0]))
def test_scale_where_is_exact_where_it_matters_and_a_bound_elsewhere(
    data: st.DataObject, window: int, k: float
) -> None:
    a, new = data.draw(st.composite(lambda draw: _returns(draw))())
    floor = 0.002
    exact = _rolling_scale(a, new, window, floor)
    scale, rows = _scale_where(a, new, window, floor, a, k)
    with np.errstate(invalid="ignore"):
        hit = np.flatnonzero(a > k * exact)
    assert np.isin(hit, rows).all()  # every row past k x scale has its exact scale ...
    np.testing.assert_array_equal(scale[rows], exact[rows])  # ... bit for bit
    known = ~np.isnan(exact)
    assert (scale[known] <= exact[known]).all()  # elsewhere a lower bound
    with np.errstate(invalid="ignore"):
        assert not (a > k * scale)[np.setdiff1d(np.arange(a.size), rows)].any()


@settings(max_examples=100, deadline=None)
@given(st.data(), st.sampled_from([5, 6, 20]))
def test_median_before_is_bottlenecks_moving_median(data: st.DataObject, window: int) -> None:
    a, new = data.draw(st.composite(lambda draw: _returns(draw))())
    rows = np.arange(a.size)
    got = _median_before(a, rows, _series_start(rows, new), window, max(3, window // 2))
    # the whole-array reference runs bn.move_median over series padded apart
    want = _rolling_scale(a, new, window, 0.002)
    np.testing.assert_array_equal(np.maximum(series._MAD_TO_SIGMA * got, 0.002), want)


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from([5, 20]))
def test_wick_before_matches_the_rolling_mean(data: st.DataObject, window: int) -> None:
    a, new = data.draw(st.composite(lambda draw: _returns(draw))())
    stretch = np.exp(np.nan_to_num(a, nan=0.0))
    ok = ~np.isnan(a) | new
    rows = np.arange(a.size)
    got = _wick_before(stretch, ok, rows, _series_start(rows, new), window)
    wicks = np.where(ok, np.log(stretch), np.nan)
    want = _rolling_mean(wicks, np.cumsum(new) - 1, window, -np.inf)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15, equal_nan=True)


def test_both_wick_paths_flag_the_same_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    df = _copies(3)
    rng = np.random.default_rng(8)
    wide = pl.Series(rng.random(df.height) < 0.01)
    df = df.with_columns(
        low=pl.when(wide).then(pl.min_horizontal("open", "close") * 0.85).otherwise("low")
    )
    monkeypatch.setattr(series, "_WIDE_SHARE", 0.0)  # every row's usual wick
    everywhere = _one_part(df, None)
    monkeypatch.setattr(series, "_WIDE_SHARE", 1.0)  # only the wide rows'
    where_needed = _one_part(df, None)
    assert everywhere.equals(where_needed)
    assert everywhere["_wick"].sum() > 100
