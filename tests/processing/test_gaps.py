"""Gap filling is explicit, flagged and only inside a series' span."""

from __future__ import annotations

import polars as pl

from quality.conftest import lean_daily
from quantivista.model.flags import QualityFlag
from quantivista.processing.gaps import fill_gaps
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import get_calendar

CAL = get_calendar("XNYS")


def test_fill_gaps_forward_fills_zero_volume_bars() -> None:
    bars = lean_daily("ibm").slice(500, 60)
    holes = bars.filter(~pl.int_range(pl.len()).is_in([10, 11, 40]))
    filled, n = fill_gaps(holes, CAL)
    assert n == 3
    assert filled["ts"].to_list() == bars["ts"].to_list()
    made = filled.filter((pl.col("quality_flags") & int(QualityFlag.GAP_FILLED)) != 0)
    assert made.height == 3
    assert made["volume"].to_list() == [0.0, 0.0, 0.0]
    prev_close = bars["close"][9]
    assert made["open"][0] == made["close"][1] == prev_close
    assert made["close"][2] == bars["close"][39]
    # the filled frame is complete for the validator; the fills keep their flag when stored
    result = Validator(CAL).validate(filled, job_id="g")
    assert "missing_bar" not in result.report.rule_counts
    assert (
        result.clean.filter((pl.col("quality_flags") & int(QualityFlag.GAP_FILLED)) != 0).height
        == 3
    )


def test_nothing_to_fill_leaves_bars_alone() -> None:
    bars = lean_daily("ibm").slice(500, 30)
    out, n = fill_gaps(bars, CAL)
    assert n == 0
    assert out.equals(bars)
