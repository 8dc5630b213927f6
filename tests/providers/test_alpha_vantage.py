"""Alpha Vantage: parsers on every recorded fixture, HTTP-200 error bodies, fuzzing, socket run."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.clock import TestClock
from quantivista.errors import (
    EntitlementError,
    ProviderError,
    QuotaExhaustedError,
    RateLimitedError,
    SymbolNotFoundError,
)
from quantivista.model.schema import BAR_POLARS_SCHEMA
from quantivista.providers.alpha_vantage import (
    AlphaVantageProvider,
    parse_global_quote,
    parse_time_series,
    parse_time_series_csv,
)
from quantivista.providers.base import BarRequest

from .conftest import LocalServer, Route, fixture_bytes

AV = "alpha_vantage"


def test_daily_parses_raw_bars_at_utc_midnight() -> None:
    bars, actions = parse_time_series(
        fixture_bytes(AV, "time_series_daily_IBM_2020-05-08.json"), "IBM"
    )
    assert bars.schema == BAR_POLARS_SCHEMA
    assert bars["ts"].to_list() == [
        datetime(2020, 5, 7, tzinfo=UTC),
        datetime(2020, 5, 8, tzinfo=UTC),
    ]
    first = bars.row(0, named=True)
    assert (first["open"], first["high"], first["low"], first["close"]) == (
        122.98,
        123.26,
        120.85,
        121.23,
    )
    assert first["volume"] == 4412047.0
    assert bars["close"][1] == 121.79 and bars["timeframe"][0] == "1d"
    assert actions.is_empty()


def test_daily_adjusted_keeps_raw_close_and_emits_the_dividend() -> None:
    body = fixture_bytes(AV, "time_series_daily_adjusted_IBM_dividend_2020-05-07.json")
    bars, actions = parse_time_series(body, "IBM")
    assert bars["close"].to_list() == [121.23, 121.805]
    assert bars["volume"].to_list() == [4412047.0, 2542577.0]
    assert actions.rows() == [("IBM", "dividend", date(2020, 5, 7), None, 1.63, None, None, AV)]


def test_split_coefficient_becomes_a_split_action() -> None:
    data = json.loads(fixture_bytes(AV, "time_series_daily_adjusted_IBM_dividend_2020-05-07.json"))
    data["Time Series (Daily)"]["2020-05-08"]["8. split coefficient"] = "4.0000"
    _, actions = parse_time_series(json.dumps(data), "IBM")
    assert actions.filter(pl.col("action_type") == "split").rows() == [
        ("IBM", "split", date(2020, 5, 8), 4.0, None, None, None, AV)
    ]


def test_intraday_json_converts_us_eastern_to_utc() -> None:
    bars, _ = parse_time_series(
        fixture_bytes(AV, "time_series_intraday_5min_IBM_2020-05-08.json"), "IBM"
    )
    # 14:00 EDT = 18:00 UTC
    assert bars["ts"].to_list() == [
        datetime(2020, 5, 8, 18, 0, tzinfo=UTC),
        datetime(2020, 5, 8, 18, 5, tzinfo=UTC),
    ]
    assert bars["timeframe"][0] == "5m"
    assert bars["low"][1] == 121.7225 and bars["volume"][1] == 31454.0


def test_intraday_csv_newest_first_crlf_becomes_sorted_utc_bars() -> None:
    body = fixture_bytes(AV, "time_series_intraday_15min_AAPL_2023-01-31_csv_excerpt.csv")
    bars, _ = parse_time_series_csv(body, "AAPL")
    assert bars.height == 26
    assert bars["timeframe"][0] == "15m"
    # 09:30 EST = 14:30 UTC (winter)
    assert bars["ts"][0] == datetime(2023, 1, 31, 14, 30, tzinfo=UTC)
    assert bars["ts"][-1] == datetime(2023, 1, 31, 20, 45, tzinfo=UTC)
    assert bars.row(0, named=True)["open"] == 141.716
    assert bars.row(-1, named=True)["close"] == 143.32
    assert bars["volume"][-1] == 6111148.0


@pytest.mark.parametrize(
    ("name", "price", "day"),
    [
        ("global_quote_IBM_2020-05-08.json", 121.74, datetime(2020, 5, 8, tzinfo=UTC)),
        ("global_quote_MSFT_2018-10-05.json", 112.13, datetime(2018, 10, 5, tzinfo=UTC)),
    ],
)
def test_global_quote(name: str, price: float, day: datetime) -> None:
    quote = parse_global_quote(fixture_bytes(AV, name), "X")
    assert quote.last == price and quote.ts == day


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("note_rate_limit_5_per_minute_legacy.json", RateLimitedError),
        ("information_burst_1_per_second.json", RateLimitedError),
        ("information_rate_limit_25_per_day.json", QuotaExhaustedError),
        ("information_premium_endpoint.json", EntitlementError),
        ("error_message_invalid_symbol.json", SymbolNotFoundError),
        ("error_message_missing_apikey.json", EntitlementError),
    ],
)
def test_http_200_error_bodies_raise_typed_errors(name: str, error: type[ProviderError]) -> None:
    body = fixture_bytes(AV, name)
    for parse in (parse_time_series, parse_time_series_csv, parse_global_quote):
        with pytest.raises(error) as info:
            parse(body, "IBM")
        assert type(info.value) is error


def test_burst_limit_asks_for_one_second() -> None:
    with pytest.raises(RateLimitedError) as info:
        parse_time_series(fixture_bytes(AV, "information_burst_1_per_second.json"), "IBM")
    assert info.value.retry_after_s == 1.0


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=12),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=20), kids, max_size=4)
    ),
    max_leaves=20,
)
av_like = st.fixed_dictionaries(
    {},
    optional={
        "Meta Data": json_values,
        "Time Series (Daily)": st.dictionaries(st.text(max_size=20), json_values, max_size=3),
        "Time Series (5min)": st.dictionaries(
            st.sampled_from(["2020-05-08 14:05:00", "2020-03-08 02:30:00", "x"]),
            st.dictionaries(
                st.sampled_from(["1. open", "2. high", "3. low", "4. close", "5. volume"]),
                st.text(max_size=8) | st.floats() | st.none(),
            ),
            max_size=3,
        ),
        "Information": st.text(max_size=30),
        "Global Quote": json_values,
    },
)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=200) | json_values.map(json.dumps) | av_like.map(json.dumps))
def test_fuzzed_bodies_raise_only_provider_errors(body: bytes | str) -> None:
    for parse in (parse_time_series, parse_time_series_csv, parse_global_quote):
        with contextlib.suppress(ProviderError):
            parse(body, "IBM")


def test_client_over_a_socket_parses_and_redacts(local_server: LocalServer) -> None:
    local_server.routes["/alpha_vantage/query"] = Route(
        200, fixture_bytes(AV, "time_series_daily_adjusted_IBM_dividend_2020-05-07.json")
    )
    client = AlphaVantageProvider(
        api_key="AVKEY", base_url=local_server.url + "/alpha_vantage", clock=TestClock()
    )
    result = client.fetch_bars(BarRequest.of("IBM", "2020-05-07", "2020-05-08"))
    assert result.bars["close"].to_list() == [121.23, 121.805]
    assert result.actions["amount"].to_list() == [1.63]
    sent = local_server.requests[0]
    assert sent.query["function"] == ["TIME_SERIES_DAILY_ADJUSTED"]
    assert sent.query["outputsize"] == ["full"]
    assert sent.query["apikey"] == ["AVKEY"]
    assert len(result.raw) == 1 and "AVKEY" not in result.raw[0].url


def test_client_falls_back_to_daily_when_adjusted_is_premium(local_server: LocalServer) -> None:
    local_server.routes["/query"] = [
        Route(200, fixture_bytes(AV, "information_premium_endpoint.json")),
        Route(200, fixture_bytes(AV, "time_series_daily_IBM_2020-05-08.json")),
    ]
    client = AlphaVantageProvider(api_key="K", base_url=local_server.url, clock=TestClock())
    result = client.fetch_bars(BarRequest.of("IBM", "2020-05-01", "2020-05-08"))
    assert result.bars["close"].to_list() == [121.23, 121.79]
    assert [r.query["function"][0] for r in local_server.requests] == [
        "TIME_SERIES_DAILY_ADJUSTED",
        "TIME_SERIES_DAILY",
    ]
    assert client.daily_function == "TIME_SERIES_DAILY" and len(result.raw) == 2


def test_client_requests_intraday_by_month_and_unadjusted(local_server: LocalServer) -> None:
    local_server.routes["/query"] = Route(
        200, fixture_bytes(AV, "time_series_intraday_5min_IBM_2020-05-08.json")
    )
    client = AlphaVantageProvider(api_key="K", base_url=local_server.url)
    start = datetime(2020, 5, 8, 18, 0, tzinfo=UTC)
    result = client.fetch_bars(
        BarRequest(
            "IBM",
            BarRequest.of("IBM", "2020-05-08", "2020-05-08", "5m").timeframe,
            start,
            datetime(2020, 5, 8, 18, 5, tzinfo=UTC),
        )
    )
    assert result.bars["ts"].to_list() == [start]
    q = local_server.requests[0].query
    assert (q["month"], q["adjusted"], q["interval"]) == (["2020-05"], ["false"], ["5min"])


def test_client_429_becomes_rate_limited(local_server: LocalServer) -> None:
    local_server.routes["/query"] = Route(429, b"busy", {"Retry-After": "12"})
    client = AlphaVantageProvider(api_key="K", base_url=local_server.url)
    with pytest.raises(RateLimitedError) as info:
        client.fetch_bars(BarRequest.of("IBM", "2020-05-01", "2020-05-08"))
    assert info.value.retry_after_s == 12.0
