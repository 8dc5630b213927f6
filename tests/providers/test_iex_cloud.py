"""IEX Cloud (retired upstream): chart and quote cassettes, plain-text errors, fuzzing, socket."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.clock import TestClock
from quantivista.errors import (
    EntitlementError,
    ProviderError,
    QuotaExhaustedError,
    SymbolNotFoundError,
)
from quantivista.providers.base import BarRequest, PriceBasis
from quantivista.providers.iex_cloud import (
    IexCloudProvider,
    chart_basis,
    parse_chart,
    parse_quote,
)

from .conftest import LocalServer, Route, cassette

I = "iex_cloud"  # noqa: E741


def body(name: str) -> bytes:
    return cassette(I, name)[1]


def test_default_chart_uses_unadjusted_columns() -> None:
    bars = parse_chart(body("chart_MSFT_default_1m.yml"), "MSFT")
    assert bars.height == 23 and bars["timeframe"][0] == "1d"
    assert bars["ts"][0] == datetime(2019, 7, 10, tzinfo=UTC)
    assert bars["ts"][-1] == datetime(2019, 8, 9, tzinfo=UTC)
    assert bars.row(0, named=True)["close"] == 137.85
    assert bars.row(-1, named=True)["volume"] == 23466701.0


def test_five_day_and_chart_by_day() -> None:
    bars = parse_chart(body("chart_MSFT_5d.yml"), "MSFT")
    assert bars["close"].to_list() == [216.39, 223.29, 223.72, 218.39, 211.01]
    assert bars["ts"][3] == datetime(2020, 11, 9, tzinfo=UTC)
    one = parse_chart(body("chart_MSFT_date_chartByDay.yml"), "MSFT")
    assert one.rows() == [
        ("MSFT", "1d", datetime(2020, 11, 10, tzinfo=UTC), 214.5, 216.5, 209.72, 211.01,
         44045120.0, None, None, I, 0, None, None)
    ]  # fmt: skip


def test_a_daily_chart_without_unadjusted_columns_is_split_adjusted() -> None:
    assert chart_basis(body("chart_MSFT_5d.yml")) is PriceBasis.NONE
    assert chart_basis(body("chart_MSFT_1d_intraday_chartInterval10.yml")) is PriceBasis.NONE
    rows = json.loads(body("chart_MSFT_5d.yml"))
    trimmed = json.dumps([{k: v for k, v in r.items() if not k.startswith("u")} for r in rows])
    assert chart_basis(trimmed) is PriceBasis.SPLITS
    assert parse_chart(trimmed, "MSFT")["close"].to_list() == [r["close"] for r in rows]


def test_minute_rows_are_new_york_bar_starts() -> None:
    bars = parse_chart(body("chart_MSFT_1d_intraday_chartInterval10.yml"), "MSFT")
    assert bars.height == 39 and bars["timeframe"][0] == "1m"
    assert bars["ts"][0] == datetime(2019, 8, 9, 13, 30, tzinfo=UTC)  # 09:30 EDT
    assert bars["ts"][-1] == datetime(2019, 8, 9, 19, 50, tzinfo=UTC)
    row = bars.row(0, named=True)
    assert (row["vwap"], row["trades"], row["volume"]) == (138.632, 23, 3673.0)


def test_quote() -> None:
    quote = parse_quote(body("quote_MSFT.yml"), "MSFT")
    assert quote.last == 119.36 and quote.bid is None and quote.ask is None
    assert quote.ts == datetime(2019, 4, 4, 20, 0, 0, 193000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "status", "error"),
    [
        ("chart_invalid_symbol_404.yml", 404, SymbolNotFoundError),
        ("chart_invalid_range_403.yml", 403, EntitlementError),
        ("chart_invalid_date_400.yml", 400, ProviderError),
    ],
)
def test_plain_text_errors(name: str, status: int, error: type[ProviderError]) -> None:
    got_status, text = cassette(I, name)
    assert got_status == status
    with pytest.raises(error):
        parse_chart(text, "MSFT")


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4)
    ),
    max_leaves=20,
)
keys = ["date", "minute", "open", "high", "low", "close", "volume", "uClose", "average",
        "numberOfTrades", "latestPrice", "latestUpdate"]  # fmt: skip
row_like = st.dictionaries(
    st.sampled_from(keys), st.none() | st.integers() | st.floats() | st.text(max_size=10)
)


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=200)
    | (json_values | st.lists(row_like, max_size=3) | row_like).map(json.dumps)
)
def test_fuzzed_bodies_raise_only_provider_errors(data: bytes | str) -> None:
    for parse in (parse_chart, parse_quote):
        with contextlib.suppress(ProviderError):
            parse(data, "MSFT")


def test_client_over_a_socket(local_server: LocalServer) -> None:
    local_server.routes["/iex_cloud/stable/stock/MSFT/chart/5d"] = Route(
        200, body("chart_MSFT_5d.yml")
    )
    local_server.routes["/iex_cloud/stable/stock/NOPE/chart/5d"] = Route(404, b"Unknown symbol")
    local_server.routes["/iex_cloud/stable/stock/MSFT/quote"] = Route(
        402, b"You have exceeded your allotted message quota."
    )
    client = IexCloudProvider(
        api_key="pk_test", base_url=local_server.url + "/iex_cloud",
        clock=TestClock(datetime(2020, 11, 11, tzinfo=UTC)),
    )  # fmt: skip
    result = client.fetch_bars(BarRequest.of("MSFT", "2020-11-05", "2020-11-09"))
    assert result.bars["close"].to_list() == [223.29, 223.72, 218.39]
    assert "price_basis" not in result.metadata  # raw, as the capabilities declare
    assert local_server.requests[0].query["token"] == ["pk_test"]
    with pytest.raises(SymbolNotFoundError):
        client.fetch_bars(BarRequest.of("NOPE", "2020-11-05", "2020-11-09"))
    with pytest.raises(QuotaExhaustedError):
        client.fetch_quote("MSFT")
