"""Canonical schemas and the coercion of user frames (polars, pandas, Arrow, dicts) into them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantivista.errors import InvalidTimeframeError, SchemaError
from quantivista.model.schema import (
    ACTION_POLARS_SCHEMA,
    ACTION_SCHEMA,
    BAR_COLUMNS,
    BAR_KEY,
    BAR_POLARS_SCHEMA,
    BAR_SCHEMA,
    BAR_VALUE_COLUMNS,
    PL_UTC_TS,
    QUARANTINE_POLARS_SCHEMA,
    coerce_actions,
    coerce_bars,
    empty_bars,
    to_polars,
    utc_lit,
)

TS = datetime(2024, 1, 2, tzinfo=UTC)
INGESTED = datetime(2024, 6, 1, 12, tzinfo=UTC)


def minimal(**overrides: Any) -> dict[str, Any]:
    """Return the required columns of two daily bars as a dict of lists."""
    data: dict[str, Any] = {
        "symbol": ["AAA", "AAA"],
        "ts": [TS, TS + timedelta(days=1)],
        "open": [10.0, 11.0],
        "high": [11.0, 12.0],
        "low": [9.5, 10.5],
        "close": [10.5, 11.5],
        "volume": [1000.0, 2000.0],
    }
    data.update(overrides)
    return data


# -- the schemas ---------------------------------------------------------------------------
def test_bar_schemas_agree_between_arrow_and_polars() -> None:
    assert BAR_SCHEMA.names == list(BAR_POLARS_SCHEMA.names()) == list(BAR_COLUMNS)
    from_arrow = pl.from_arrow(BAR_SCHEMA.empty_table())
    assert isinstance(from_arrow, pl.DataFrame)
    assert from_arrow.schema == BAR_POLARS_SCHEMA


def test_bar_schema_column_types() -> None:
    assert BAR_COLUMNS == (
        "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "vwap",
        "trades", "provider", "quality_flags", "ingested_at", "job_id",
    )  # fmt: skip
    assert BAR_POLARS_SCHEMA["ts"] == pl.Datetime("us", "UTC")
    assert BAR_POLARS_SCHEMA["ingested_at"] == pl.Datetime("us", "UTC")
    assert BAR_POLARS_SCHEMA["quality_flags"] == pl.UInt32()
    assert BAR_POLARS_SCHEMA["trades"] == pl.Int64()
    assert BAR_KEY == ("symbol", "timeframe", "ts")
    assert not set(BAR_VALUE_COLUMNS) & {"ingested_at", "job_id", *BAR_KEY}


def test_action_schemas_agree_between_arrow_and_polars() -> None:
    assert ACTION_SCHEMA.names == list(ACTION_POLARS_SCHEMA.names())
    from_arrow = pl.from_arrow(ACTION_SCHEMA.empty_table())
    assert isinstance(from_arrow, pl.DataFrame)
    assert from_arrow.schema == ACTION_POLARS_SCHEMA


def test_quarantine_schema_extends_the_bar_schema() -> None:
    names = list(QUARANTINE_POLARS_SCHEMA.names())
    assert names[: len(BAR_COLUMNS)] == list(BAR_COLUMNS)
    assert names[len(BAR_COLUMNS) :] == ["rule", "severity", "reason", "quarantined_at"]


def test_empty_bars_has_the_canonical_schema() -> None:
    df = empty_bars()
    assert df.height == 0
    assert df.schema == BAR_POLARS_SCHEMA


# -- to_polars -----------------------------------------------------------------------------
def test_to_polars_accepts_every_frame_kind() -> None:
    data = {"a": [1, 2], "b": ["x", "y"]}
    expected = pl.DataFrame(data)
    assert to_polars(expected) is expected
    for frame in (
        expected.lazy(),
        expected.to_arrow(),
        expected.to_arrow().to_batches()[0],
        pd.DataFrame(data),
        data,
    ):
        assert_frame_equal(to_polars(frame), expected, check_dtypes=False)


def test_to_polars_refuses_other_objects() -> None:
    with pytest.raises(SchemaError, match="expected a polars or pandas") as info:
        to_polars([1, 2, 3])
    assert info.value.context["got"] == "list"


# -- coerce_bars: accepted inputs ------------------------------------------------------------
def test_coerce_bars_from_polars_fills_optional_columns() -> None:
    out = coerce_bars(
        pl.DataFrame(minimal()), timeframe="1day", provider="vendor", job_id="j1",
        ingested_at=INGESTED,
    )  # fmt: skip
    assert out.schema == BAR_POLARS_SCHEMA
    assert out["timeframe"].to_list() == ["1d", "1d"]  # canonical spelling
    assert out["provider"].to_list() == ["vendor", "vendor"]
    assert out["job_id"].to_list() == ["j1", "j1"]
    assert out["ingested_at"].to_list() == [INGESTED, INGESTED]
    assert out["quality_flags"].to_list() == [0, 0]
    assert out["vwap"].null_count() == 2
    assert out["trades"].null_count() == 2
    assert out["close"].to_list() == [10.5, 11.5]


def test_coerce_bars_from_pandas_converts_zones_to_utc_and_widens_integers() -> None:
    pdf = pd.DataFrame(
        {
            "symbol": ["AAA", "AAA"],
            "ts": pd.to_datetime(["2024-01-02 09:30", "2024-01-02 09:31"]).tz_localize(
                "America/New_York"
            ),
            "open": [10, 11],
            "high": [11, 12],
            "low": [9, 10],
            "close": [10, 12],
            "volume": [100, 200],
        }
    )
    out = coerce_bars(pdf, timeframe="1m")
    assert out.schema == BAR_POLARS_SCHEMA
    assert out["ts"].to_list() == [
        datetime(2024, 1, 2, 14, 30, tzinfo=UTC),
        datetime(2024, 1, 2, 14, 31, tzinfo=UTC),
    ]
    assert out["open"].to_list() == [10.0, 11.0]
    assert out["volume"].dtype == pl.Float64


def test_coerce_bars_from_pandas_keeps_a_datetime_index_named_ts() -> None:
    pdf = pd.DataFrame(minimal()).set_index("ts")
    out = coerce_bars(pdf, timeframe="1d")
    assert out["ts"].to_list() == minimal()["ts"]


def test_coerce_bars_from_arrow_renames_date_and_turns_dates_into_utc_midnight() -> None:
    data = minimal()
    data["date"] = [date(2024, 1, 2), date(2024, 1, 3)]
    del data["ts"]
    table = pa.table({**data, "timeframe": ["1d", "1d"], "volume": pa.array([5, 6], pa.int32())})
    out = coerce_bars(table)
    assert out["ts"].to_list() == [TS, TS + timedelta(days=1)]
    assert out["volume"].to_list() == [5.0, 6.0]
    assert out.schema == BAR_POLARS_SCHEMA


@pytest.mark.parametrize("alias", ["timestamp", "date", "datetime", "time"])
def test_coerce_bars_accepts_common_names_for_ts(alias: str) -> None:
    data = minimal()
    data[alias] = data.pop("ts")
    assert coerce_bars(data, timeframe="1d")["ts"].to_list() == minimal()["ts"]


def test_coerce_bars_keeps_existing_provider_job_and_knowledge_time() -> None:
    data = minimal(provider=["a", None], job_id=[None, "old"], ingested_at=[INGESTED, None])
    later = INGESTED + timedelta(days=1)
    out = coerce_bars(
        pl.DataFrame(data), timeframe="1d", provider="fill", job_id="new", ingested_at=later
    )
    assert out["provider"].to_list() == ["a", "fill"]
    assert out["job_id"].to_list() == ["new", "old"]
    assert out["ingested_at"].to_list() == [INGESTED, later]


def test_coerce_bars_keeps_provider_and_job_columns_when_no_defaults_are_given() -> None:
    # a frame that already carries provider and job_id (e.g. read back from the lake) must
    # pass through without the caller repeating them as keywords
    data = minimal(provider=["a", "b"], job_id=["j1", "j2"], timeframe=["1d", "1d"])
    out = coerce_bars(pl.DataFrame(data))
    assert out["provider"].to_list() == ["a", "b"]
    assert out["job_id"].to_list() == ["j1", "j2"]


def test_coerce_bars_canonicalises_the_timeframe_column() -> None:
    out = coerce_bars(pl.DataFrame(minimal(timeframe=["60min", "1hour"])))
    assert out["timeframe"].to_list() == ["60m", "1h"]


def test_coerce_bars_converts_millisecond_and_zoned_timestamps() -> None:
    ts = pl.Series(
        [datetime(2024, 1, 2, 9, 30), datetime(2024, 1, 2, 9, 31)], dtype=pl.Datetime("ms")
    ).dt.replace_time_zone("America/New_York")
    out = coerce_bars(pl.DataFrame(minimal()).with_columns(ts=ts), timeframe="1m")
    assert out.schema["ts"] == pl.Datetime("us", "UTC")
    assert out["ts"][0] == datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


# -- coerce_bars: refused inputs -------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda d: pl.DataFrame(d),
        lambda d: pd.DataFrame(d),
        lambda d: pa.table(d),
    ],
    ids=["polars", "pandas", "arrow"],
)
def test_coerce_bars_refuses_naive_timestamps(make: Any) -> None:
    data = minimal(ts=[datetime(2024, 1, 2), datetime(2024, 1, 3)])
    with pytest.raises(SchemaError, match="'ts' holds naive datetimes"):
        coerce_bars(make(data), timeframe="1d")


def test_coerce_bars_refuses_naive_ingested_at() -> None:
    data = minimal(ingested_at=[datetime(2024, 1, 2), datetime(2024, 1, 3)])
    with pytest.raises(SchemaError, match="'ingested_at' holds naive datetimes"):
        coerce_bars(data, timeframe="1d")


def test_coerce_bars_refuses_non_temporal_ts() -> None:
    with pytest.raises(SchemaError, match="'ts' must be a datetime or date"):
        coerce_bars(minimal(ts=["2024-01-02", "2024-01-03"]), timeframe="1d")


def test_coerce_bars_refuses_unknown_columns_and_names_them() -> None:
    with pytest.raises(SchemaError, match="outside the canonical schema: adj_close, foo") as info:
        coerce_bars(minimal(adj_close=[1.0, 2.0], foo=[1, 2]), timeframe="1d")
    assert info.value.context["allowed"] == list(BAR_COLUMNS)


@pytest.mark.parametrize("column", ["symbol", "ts", "open", "high", "low", "close", "volume"])
def test_coerce_bars_refuses_missing_required_columns(column: str) -> None:
    data = minimal()
    del data[column]
    with pytest.raises(SchemaError, match=rf"lacks required columns: {column} \["):
        coerce_bars(data, timeframe="1d")


def test_coerce_bars_needs_a_timeframe_column_or_argument() -> None:
    with pytest.raises(SchemaError, match="lacks required columns: timeframe"):
        coerce_bars(minimal())


def test_coerce_bars_lists_every_missing_column() -> None:
    with pytest.raises(SchemaError, match="lacks required columns: open, high, low"):
        coerce_bars({"symbol": ["A"], "ts": [TS], "close": [1.0], "volume": [1.0]}, timeframe="1d")


@pytest.mark.parametrize("column", ["open", "high", "low", "close", "volume", "vwap"])
@pytest.mark.parametrize(
    "make",
    [
        lambda d: pl.DataFrame(d),
        lambda d: pd.DataFrame(d),
        lambda d: pa.table(d),
    ],
    ids=["polars", "pandas", "arrow"],
)
def test_coerce_bars_refuses_numbers_given_as_strings(column: str, make: Any) -> None:
    data = minimal(**{column: ["1.5", "2.5"]})
    with pytest.raises(SchemaError, match=f"column '{column}' must be numeric"):
        coerce_bars(make(data), timeframe="1d")


def test_coerce_bars_refuses_string_trades() -> None:
    with pytest.raises(SchemaError, match="column 'trades' must be numeric"):
        coerce_bars(minimal(trades=["5", "6"]), timeframe="1d")


def test_coerce_bars_names_the_column_of_a_pandas_object_column_mixing_numbers_and_text() -> None:
    # vendors' CSVs put "N/A" among prices; pandas keeps such a column as object dtype
    pdf = pd.DataFrame(minimal())
    pdf["close"] = pd.Series([10.5, "N/A"], dtype=object)
    with pytest.raises(SchemaError, match="close"):
        coerce_bars(pdf, timeframe="1d")


@pytest.mark.parametrize("column", ["symbol", "provider", "job_id", "timeframe"])
def test_coerce_bars_refuses_non_string_labels(column: str) -> None:
    data = minimal(**{column: [1, 2]})
    with pytest.raises(SchemaError, match=f"column '{column}' must hold strings"):
        coerce_bars(data, timeframe="1d")


@pytest.mark.parametrize("column", ["symbol", "ts"])
def test_coerce_bars_refuses_null_keys(column: str) -> None:
    data = minimal()
    data[column] = [data[column][0], None]
    with pytest.raises(SchemaError, match="must not be null") as info:
        coerce_bars(pl.DataFrame(data), timeframe="1d")
    assert info.value.context["null_counts"][column] == 1


def test_coerce_bars_refuses_quality_flags_that_do_not_fit_uint32() -> None:
    with pytest.raises(SchemaError, match="cannot convert bars"):
        coerce_bars(minimal(quality_flags=[-1, 0]), timeframe="1d")


def test_coerce_bars_refuses_bad_timeframes() -> None:
    with pytest.raises(InvalidTimeframeError):
        coerce_bars(minimal(), timeframe="fortnightly")
    with pytest.raises(InvalidTimeframeError):
        coerce_bars(minimal(timeframe=["1d", "1 eon"]))


def test_coerce_bars_round_trips_through_pandas(make_bars: Any) -> None:
    bars = make_bars(2, 5)
    assert_frame_equal(coerce_bars(bars.to_pandas()), bars)


# -- property: valid canonical frames are a fixed point -------------------------------------
_TIMEFRAMES = ["1m", "5m", "15m", "1h", "1d", "1w", "1mo"]
_EPOCH = datetime(1990, 1, 1, tzinfo=UTC)
_floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64))
_instants = st.integers(0, 40 * 366 * 86400 * 10**6).map(
    lambda us: _EPOCH + timedelta(microseconds=us)
)


@st.composite
def canonical_bars(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(0, 12))

    def col(strategy: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(strategy, min_size=n, max_size=n))

    data = {
        "symbol": col(st.sampled_from(["AAPL", "MSFT", "EUR/USD", "BRK.B", "ÄÖ"])),
        "timeframe": col(st.sampled_from(_TIMEFRAMES)),
        "ts": col(_instants),
        "open": col(_floats),
        "high": col(_floats),
        "low": col(_floats),
        "close": col(_floats),
        "volume": col(_floats),
        "vwap": col(_floats),
        "trades": col(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
        "provider": col(st.one_of(st.none(), st.text(max_size=8))),
        "quality_flags": col(st.integers(0, 2**32 - 1)),
        "ingested_at": col(st.one_of(st.none(), _instants)),
        "job_id": col(st.one_of(st.none(), st.text(max_size=8))),
    }
    return pl.DataFrame(data, schema=BAR_POLARS_SCHEMA)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(canonical_bars())
def test_canonical_frames_pass_through_coerce_bars_unchanged(bars: pl.DataFrame) -> None:
    assert_frame_equal(coerce_bars(bars), bars)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(canonical_bars())
def test_canonical_arrow_tables_convert_to_the_same_frame(bars: pl.DataFrame) -> None:
    assert_frame_equal(coerce_bars(bars.to_arrow()), bars)


# -- coerce_actions --------------------------------------------------------------------------
def test_coerce_actions_parses_dates_and_fills_provider() -> None:
    out = coerce_actions(
        {
            "symbol": ["AAA", "BBB"],
            "action_type": ["split", "dividend"],
            "ex_date": ["2024-06-10", "2024-06-11"],
            "ratio": [4, None],
            "amount": [None, 0.25],
        },
        provider="vendor",
    )
    assert out.schema == ACTION_POLARS_SCHEMA
    assert out["ex_date"].to_list() == [date(2024, 6, 10), date(2024, 6, 11)]
    assert out["ratio"].to_list() == [4.0, None]
    assert out["provider"].to_list() == ["vendor", "vendor"]
    assert out["currency"].null_count() == 2


def test_coerce_actions_takes_the_date_of_datetimes() -> None:
    out = coerce_actions(
        pl.DataFrame({"symbol": ["A"], "action_type": ["split"], "ex_date": [TS], "ratio": [2.0]})
    )
    assert out["ex_date"].to_list() == [date(2024, 1, 2)]
    assert out["provider"].to_list() == [None]


def test_coerce_actions_refuses_unknown_types_missing_and_extra_columns() -> None:
    base = {"symbol": ["A"], "action_type": ["split"], "ex_date": [date(2024, 1, 2)]}
    with pytest.raises(SchemaError, match="unknown action_type") as info:
        coerce_actions({**base, "action_type": ["buyback"]})
    assert info.value.context["values"] == ["buyback"]
    with pytest.raises(SchemaError, match="lacks required columns: ex_date"):
        coerce_actions({"symbol": ["A"], "action_type": ["split"]})
    with pytest.raises(SchemaError, match="unknown columns: note"):
        coerce_actions({**base, "note": ["x"]})
    with pytest.raises(SchemaError, match="cannot convert actions"):
        coerce_actions({**base, "ex_date": ["2024-13-01"]})


@pytest.mark.parametrize("text", ["06/10/2024", "10/06/2024", "June 10 2024"])
def test_coerce_actions_refuses_ex_dates_that_are_not_iso(text: str) -> None:
    # "06/10/2024" is June 10 to a US vendor and October 6 to a European one: an ex-date
    # guessed wrong moves every adjustment factor, so only YYYY-MM-DD is accepted
    base = {"symbol": ["A"], "action_type": ["split"], "ratio": [2.0]}
    with pytest.raises(SchemaError):
        coerce_actions({**base, "ex_date": [text]})


def test_series_in_blocks_accepts_provider_order_and_refuses_repeats() -> None:
    from datetime import UTC, datetime

    from quantivista.model.schema import series_in_blocks

    t = [datetime(2024, 1, d, tzinfo=UTC) for d in (2, 3, 4)]
    blocks = pl.DataFrame({"symbol": ["ZZZ"] * 3 + ["AAA"] * 3, "ts": t + t})
    assert series_in_blocks(blocks)  # blocks need not be in alphabetical order
    split_block = pl.DataFrame({"symbol": ["AAA", "ZZZ", "AAA"], "ts": t})
    assert not series_in_blocks(split_block)
    repeated = pl.DataFrame({"symbol": ["AAA"] * 3, "ts": [t[0], t[1], t[1]]})
    assert not series_in_blocks(repeated)
    backwards = pl.DataFrame({"symbol": ["AAA"] * 3, "ts": t[::-1]})
    assert not series_in_blocks(backwards)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 3, 8, 7, 30, 5, 123456, tzinfo=UTC),
        datetime(2026, 3, 8, 7, 30, 5, 123456, tzinfo=ZoneInfo("UTC")),  # what polars returns
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=ZoneInfo("UTC")),  # before the epoch
        datetime(2026, 1, 1),  # naive: polars' reading
        None,
    ],
)
def test_utc_lit_is_the_datetime_literal_it_replaces(value: datetime | None) -> None:
    assert pl.select(utc_lit(value)).item() == pl.select(pl.lit(value, PL_UTC_TS)).item()
    assert pl.select(utc_lit(value)).dtypes == [PL_UTC_TS]


def test_utc_lit_of_another_zone_is_refused_as_polars_refuses_it() -> None:
    with pytest.raises(TypeError):
        utc_lit(datetime(2026, 1, 1, tzinfo=ZoneInfo("America/New_York")))
