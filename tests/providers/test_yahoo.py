"""Yahoo chart: raw prices from split-adjusted ones, events, empty windows, errors, fuzzing."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.clock import TestClock
from quantivista.errors import (
    EntitlementError,
    ProviderError,
    RateLimitedError,
    SymbolNotFoundError,
    TransientProviderError,
)
from quantivista.providers.base import BarRequest
from quantivista.providers.yahoo import YahooProvider, parse_chart, parse_splits

from .conftest import LocalServer, Route, envelope_body, fixture_bytes

Y = "yahoo"
SPLIT_2020 = (1598880600, 4.0)  # AAPL 4:1, ex 2020-08-31


def test_daily_bar_is_restamped_to_the_session_date() -> None:
    bars, actions = parse_chart(
        envelope_body(Y, "chart_AAPL_1d_2020-01-01_2020-01-03.json"), "AAPL"
    )
    assert bars["ts"].to_list() == [datetime(2020, 1, 2, tzinfo=UTC)]  # 1577975400 = 09:30 ET
    assert bars["close"][0] == pytest.approx(75.0875015258789)
    assert bars["volume"][0] == 135480400.0
    assert actions.is_empty()


def test_later_split_turns_adjusted_prices_back_into_raw() -> None:
    body = envelope_body(Y, "chart_AAPL_1d_2020-01-01_2020-01-03.json")
    bars, _ = parse_chart(body, "AAPL", [SPLIT_2020])
    row = bars.row(0, named=True)
    assert row["close"] == pytest.approx(300.35, abs=1e-4)  # the close as traded on 2020-01-02
    assert row["open"] == pytest.approx(296.24, abs=1e-4)
    assert row["volume"] == pytest.approx(33870100.0)


def test_split_and_dividend_window() -> None:
    body = envelope_body(Y, "chart_AAPL_1d_2020-08-31_2020-11-07_split_dividend.json")
    bars, actions = parse_chart(body, "AAPL")
    assert bars.height == 49
    assert bars["ts"][0] == datetime(2020, 8, 31, tzinfo=UTC)
    assert bars["ts"][-1] == datetime(2020, 11, 6, tzinfo=UTC)
    # the split day itself is already post-split: no factor
    assert bars["close"][0] == pytest.approx(129.0399932861328)
    assert bars["volume"][0] == 225702700.0
    assert actions.rows() == [
        ("AAPL", "split", date(2020, 8, 31), 4.0, None, None, None, Y),
        ("AAPL", "dividend", date(2020, 11, 6), None, 0.205, "USD", None, Y),
    ]
    assert parse_splits(body, "AAPL") == [SPLIT_2020]


def test_intraday_prepost_keeps_utc_bar_starts() -> None:
    bars, _ = parse_chart(envelope_body(Y, "chart_TSLA_30m_prepost_2021-11-22.json"), "TSLA")
    assert bars.height == 30 and bars["timeframe"][0] == "30m"
    assert bars["ts"][0] == datetime(2021, 11, 22, 9, 0, tzinfo=UTC)  # 04:00 EST
    assert bars["ts"][-1] == datetime(2021, 11, 22, 23, 30, tzinfo=UTC)
    assert bars["open"][0] == 1148.51 and bars["volume"][0] == 0.0


def test_empty_weekend_window_is_empty_not_an_error() -> None:
    bars, actions = parse_chart(envelope_body(Y, "chart_AAPL_1m_weekend_empty.json"), "AAPL")
    assert bars.is_empty() and actions.is_empty()


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("chart_error_404_not_found_quoted.json", SymbolNotFoundError),
        ("chart_error_422_range_quoted.json", EntitlementError),
        ("rate_limit_429_body_quoted.txt", RateLimitedError),
    ],
)
def test_error_bodies(name: str, error: type[ProviderError]) -> None:
    with pytest.raises(error):
        parse_chart(fixture_bytes(Y, name), "AAPL")


def test_mismatched_array_lengths_are_malformed() -> None:
    data = json.loads(envelope_body(Y, "chart_AAPL_1d_2020-01-01_2020-01-03.json"))
    data["chart"]["result"][0]["indicators"]["quote"][0]["close"] = [1.0, 2.0]
    with pytest.raises(ProviderError, match="2 values for 1 timestamps"):
        parse_chart(json.dumps(data), "AAPL")


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4)
    ),
    max_leaves=20,
)
arrays = st.lists(
    st.none() | st.floats() | st.integers(-(2**70), 2**70) | st.text(max_size=4), max_size=3
)
chart_like = st.fixed_dictionaries(
    {
        "chart": st.fixed_dictionaries(
            {
                "result": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "meta": st.fixed_dictionaries(
                                {},
                                optional={
                                    "dataGranularity": st.sampled_from(["1d", "5m", "7x"]),
                                    "exchangeTimezoneName": st.sampled_from(
                                        ["America/New_York", "Mars/Base", 3]
                                    ),
                                },
                            ),
                            "timestamp": st.lists(
                                st.integers(-(2**40), 2**40) | st.text(max_size=3), max_size=3
                            ),
                            "events": json_values,
                            "indicators": st.fixed_dictionaries(
                                {
                                    "quote": st.lists(
                                        st.dictionaries(
                                            st.sampled_from(
                                                ["open", "high", "low", "close", "volume"]
                                            ),
                                            arrays,
                                        ),
                                        max_size=1,
                                    )
                                }
                            ),
                        },
                    ),
                    max_size=1,
                ),
                "error": st.none() | json_values,
            }
        )
    }
)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=200) | json_values.map(json.dumps) | chart_like.map(json.dumps))
def test_fuzzed_bodies_raise_only_provider_errors(body: bytes | str) -> None:
    for parse in (parse_chart, parse_splits):
        with contextlib.suppress(ProviderError):
            parse(body, "AAPL")


def test_client_over_a_socket_asks_for_later_splits(local_server: LocalServer) -> None:
    split = {"date": 1598880600, "numerator": 4, "denominator": 1}
    result = {"meta": {"dataGranularity": "1mo"}, "events": {"splits": {"1598880600": split}}}
    splits_only = json.dumps({"chart": {"result": [result], "error": None}}).encode()

    def route(seen: object) -> Route:
        q = seen.query  # type: ignore[attr-defined]
        if q.get("events") == ["split"]:
            return Route(200, splits_only)
        return Route(200, envelope_body(Y, "chart_AAPL_1d_2020-01-01_2020-01-03.json"))

    local_server.routes["/yahoo/v8/finance/chart/AAPL"] = route
    client = YahooProvider(
        base_url=local_server.url + "/yahoo", clock=TestClock(datetime(2025, 2, 20, tzinfo=UTC))
    )
    result = client.fetch_bars(BarRequest.of("AAPL", "2020-01-01", "2020-01-03"))
    assert result.bars["close"][0] == pytest.approx(300.35, abs=1e-4)
    assert result.actions.is_empty()  # the later split is outside the window
    assert len(result.raw) == 2
    main = local_server.requests[1].query
    assert main["interval"] == ["1d"] and main["period1"] == ["1577836800"]


def test_client_404_and_429(local_server: LocalServer) -> None:
    local_server.routes["/v8/finance/chart/NOPE"] = Route(
        404, fixture_bytes(Y, "chart_error_404_not_found_quoted.json")
    )
    local_server.routes["/v8/finance/chart/BUSY"] = Route(
        429, fixture_bytes(Y, "rate_limit_429_body_quoted.txt"), {"Retry-After": "30"}
    )
    client = YahooProvider(
        base_url=local_server.url, clock=TestClock(datetime(2020, 1, 5, tzinfo=UTC))
    )
    with pytest.raises(SymbolNotFoundError, match="delisted"):
        client.fetch_bars(BarRequest.of("NOPE", "2020-01-01", "2020-01-03"))
    with pytest.raises(RateLimitedError) as info:
        client.fetch_bars(BarRequest.of("BUSY", "2020-01-01", "2020-01-03"))
    assert info.value.retry_after_s == 30.0


def _chart(volume: int, close: float) -> bytes:
    quote = {"open": [close], "high": [close], "low": [close], "close": [close]}
    result = {
        "meta": {"dataGranularity": "1d", "exchangeTimezoneName": "America/New_York"},
        "timestamp": [1577975400],  # 2020-01-02 09:30 New York
        "indicators": {"quote": [{**quote, "volume": [volume]}]},
    }
    return json.dumps({"chart": {"result": [result], "error": None}}).encode()


def test_recovered_volume_is_whole_shares_after_an_odd_split() -> None:
    # 408903 shares traded; after a later 3:2 split Yahoo shows round(408903 * 1.5) = 613354
    bars, _ = parse_chart(_chart(613354, 24.0), "ODD", [(1598880600, 1.5)])
    assert bars["volume"].to_list() == [408903.0]
    assert bars["close"][0] == pytest.approx(36.0)
    bars, _ = parse_chart(_chart(613354, 24.0), "ODD")  # no split: untouched
    assert bars["volume"].to_list() == [613354.0]


def test_chart_error_of_a_backend_hiccup_is_transient() -> None:
    hiccup = {"code": "Internal Server Error", "description": "Timeout, please retry"}
    body = json.dumps({"chart": {"result": None, "error": hiccup}})
    with pytest.raises(TransientProviderError, match="Internal Server Error"):
        parse_chart(body, "AAPL")
    odd = {"code": "Bad Request", "description": "Invalid input - interval=7d"}
    with pytest.raises(ProviderError) as info:
        parse_chart(json.dumps({"chart": {"result": None, "error": odd}}), "AAPL")
    assert not isinstance(info.value, TransientProviderError)
