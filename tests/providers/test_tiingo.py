"""Tiingo: daily JSON and CSV, IEX intraday, detail errors, fuzzing, socket run."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.errors import EntitlementError, ProviderError, QuotaExhaustedError
from quantivista.providers.base import BarRequest
from quantivista.providers.tiingo import (
    TiingoProvider,
    parse_daily,
    parse_daily_csv,
    parse_intraday,
)

from .conftest import LocalServer, Route, cassette

T = "tiingo"
DAILY = "daily_GOOGL_2015-01-01_2015-01-05.cassette.yaml"


def test_daily_json_and_csv_agree() -> None:
    bars, actions = parse_daily(cassette(T, DAILY)[1], "GOOGL")
    assert bars["ts"].to_list() == [
        datetime(2015, 1, 2, tzinfo=UTC),
        datetime(2015, 1, 5, tzinfo=UTC),
    ]
    assert bars["close"].to_list() == [529.55, 519.46]
    assert bars["high"][1] == 527.9899 and bars["volume"][1] == 2059119.0
    assert actions.is_empty()
    csv_bars, _ = parse_daily_csv(
        cassette(T, "daily_GOOGL_2015-01-01_2015-01-05_csv.cassette.yaml")[1], "GOOGL"
    )
    assert csv_bars.equals(bars)


def test_latest_with_old_offset_format() -> None:
    bars, _ = parse_daily(cassette(T, "daily_GOOGL_latest.cassette.yaml")[1], "GOOGL")
    assert bars.rows() == [
        ("GOOGL", "1d", datetime(2018, 4, 12, tzinfo=UTC), 1031.47, 1044.65, 1026.05, 1037.29,
         1644794.0, None, None, T, 0, None, None)
    ]  # fmt: skip


def test_dividend_and_split_rows_become_actions() -> None:
    rows = json.loads(cassette(T, DAILY)[1])
    rows[0]["divCash"] = 0.23
    rows[1]["splitFactor"] = 2.0
    _, actions = parse_daily(json.dumps(rows), "GOOGL")
    assert actions.rows() == [
        ("GOOGL", "dividend", date(2015, 1, 2), None, 0.23, None, None, T),
        ("GOOGL", "split", date(2015, 1, 5), 2.0, None, None, None, T),
    ]


def test_iex_intraday_is_utc_without_volume() -> None:
    bars = parse_intraday(
        cassette(T, "iex_GOOGL_30min_2018-01-02.cassette.yaml")[1], "GOOGL", "30m"
    )
    assert bars.height == 13
    assert bars["ts"][0] == datetime(2018, 1, 2, 14, 30, tzinfo=UTC)
    assert bars["close"][-1] == 1073.315 and bars["volume"].null_count() == 13


def test_detail_and_plain_text_errors() -> None:
    status, text = cassette(T, "error_permission_detail.cassette.yaml")
    assert status == 403
    with pytest.raises(EntitlementError, match="permission"):
        parse_daily(text, "GOOGL")
    with pytest.raises(QuotaExhaustedError):
        parse_daily_csv("You have run over your 500 symbol look up for this month.", "GOOGL")


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4)
    ),
    max_leaves=20,
)
row_like = st.dictionaries(
    st.sampled_from(["date", "open", "high", "low", "close", "volume", "divCash", "splitFactor"]),
    st.none() | st.integers() | st.floats() | st.sampled_from(["2015-01-02T00:00:00.000Z", "x"]),
)


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=200) | (json_values | st.lists(row_like, max_size=3)).map(json.dumps)
)
def test_fuzzed_bodies_raise_only_provider_errors(data: bytes | str) -> None:
    for parse in (parse_daily, parse_daily_csv, parse_intraday):
        with contextlib.suppress(ProviderError):
            parse(data, "GOOGL")


def test_client_over_a_socket(local_server: LocalServer) -> None:
    local_server.routes["/tiingo/tiingo/daily/GOOGL/prices"] = Route(200, cassette(T, DAILY)[1])
    client = TiingoProvider(api_key="TKEY", base_url=local_server.url + "/tiingo")
    result = client.fetch_bars(BarRequest.of("GOOGL", "2015-01-01", "2015-01-05"))
    assert result.bars["close"].to_list() == [529.55, 519.46]
    sent = local_server.requests[0]
    assert sent.headers["Authorization"] == "Token TKEY"
    assert sent.query["startDate"] == ["2015-01-01"] and sent.query["endDate"] == ["2015-01-05"]
