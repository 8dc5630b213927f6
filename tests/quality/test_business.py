"""Business rules loaded from TOML: ranges, allowed symbols, maximum gaps."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.errors import ConfigurationError
from quantivista.model.flags import QualityFlag
from quantivista.quality.business import load_rules, parse_rules
from quantivista.quality.rules import DEFAULT_RULES
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import get_calendar

RULES_TOML = """
[[range]]
column = "close"
min = 100
max = 150
severity = "error"

[[range]]
column = "volume"
max = 2e7
symbols = ["IBM"]

[allowed_symbols]
symbols = ["IBM"]
severity = "error"

[[max_gap]]
max = "4d"
timeframe = "1d"
"""


def test_rules_from_toml_quarantine_and_flag(tmp_path: Path, ibm: tuple[pl.DataFrame, ...]) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RULES_TOML)
    rules = load_rules(path)
    assert [r.name for r in rules] == [
        "range:close",
        "range:volume",
        "allowed_symbols",
        "max_gap:4d",
    ]
    bars, actions = ibm
    part = bars.slice(2000, 300)
    other = part.slice(0, 3).with_columns(symbol=pl.lit("XYZ"))
    gappy = part.filter(~pl.int_range(pl.len()).is_between(100, 104))  # one gap of a week
    v = Validator(get_calendar("XNYS"), DEFAULT_RULES + rules)
    result = v.validate(pl.concat([gappy, other]), job_id="b", actions=actions)
    out_of_range = pl.concat([gappy, other]).filter(~pl.col("close").is_between(100, 150))
    rejected_rules = result.rejected["rule"].str.split(",").explode()
    assert (rejected_rules == "allowed_symbols").sum() == 3
    assert (rejected_rules == "range:close").sum() == out_of_range.height
    counts = result.report.rule_counts
    long_gaps = gappy.select((pl.col("ts").diff().dt.total_seconds() > 4 * 86400).sum()).item()
    assert long_gaps >= 1
    assert counts["max_gap:4d"] == long_gaps
    assert counts.get("range:volume", 0) == gappy.filter(pl.col("volume") > 2e7).height
    after_gap = gappy["ts"][100]
    row = result.clean.filter(pl.col("ts") == after_gap)
    if row.height:  # unless its close is out of range (then it is in quarantine)
        assert row["quality_flags"][0] & int(QualityFlag.BUSINESS_RULE)
    assert result.clean.filter(~pl.col("close").is_between(100, 150)).is_empty()


@pytest.mark.parametrize(
    "doc",
    [
        {"range": [{"column": "nope", "min": 1}]},
        {"range": [{"column": "close"}]},
        {"range": [{"column": "close", "min": 5, "max": 1}]},
        {"max_gap": [{"max": "five days"}]},
        {"allowed_symbols": {"symbols": []}},
        {"unknown": {}},
        {"range": [{"column": "close", "min": 1}, {"column": "close", "max": 9}]},
    ],
)
def test_bad_rule_files_raise_configuration_error(doc: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        parse_rules(doc)


def test_unreadable_or_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        load_rules(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[range]\ncolumn=")
    with pytest.raises(ConfigurationError):
        load_rules(bad)


@settings(max_examples=60, deadline=None)
@given(
    lo=st.one_of(st.none(), st.floats(-1e6, 1e6)),
    hi=st.one_of(st.none(), st.floats(-1e6, 1e6)),
    values=st.lists(st.floats(-2e6, 2e6), min_size=1, max_size=30),
)
def test_range_rule_matches_its_bounds(
    lo: float | None, hi: float | None, values: list[float]
) -> None:
    spec: dict[str, object] = {"column": "open"}
    if lo is not None:
        spec["min"] = lo
    if hi is not None:
        spec["max"] = hi
    valid = (lo is not None or hi is not None) and (lo is None or hi is None or lo <= hi)
    if not valid:
        with pytest.raises(ConfigurationError):
            parse_rules({"range": [spec]})
        return
    (rule,) = parse_rules({"range": [spec]})
    df = pl.DataFrame({"open": values, "symbol": "A"})
    got = df.select(rule.expr())[rule.name].to_list()
    want = [(lo is not None and v < lo) or (hi is not None and v > hi) for v in values]
    assert got == want


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 500), unit=st.sampled_from("smhd"))
def test_max_gap_durations_parse(n: int, unit: str) -> None:
    (rule,) = parse_rules({"max_gap": [{"max": f"{n}{unit}"}]})
    seconds = n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    df = pl.DataFrame({"_gap_s": [seconds, seconds + 1, None], "timeframe": "1d"})
    assert df.select(rule.expr())[rule.name].to_list() == [False, True, False]


def test_platform_applies_the_configured_rules_file(
    tmp_path: Path, ibm: tuple[pl.DataFrame, ...]
) -> None:
    from quantivista.config import Settings
    from quantivista.platform import Platform

    path = tmp_path / "rules.toml"
    path.write_text('[allowed_symbols]\nsymbols = ["MSFT"]\nseverity = "error"\n')
    settings = Settings(quality={"rules_file": path}).with_data_dir(tmp_path / "data")
    bars, _ = ibm
    with Platform.from_settings(settings) as p:
        report = p.write_bars(bars.slice(0, 20).drop("quality_flags", "ingested_at", "job_id"),
                              source="lean", timeframe="1d")  # fmt: skip
        assert report.invalid_records == 20
        assert set(p.quarantine()["rule"]) == {"allowed_symbols"}
