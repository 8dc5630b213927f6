"""Polygon aggregates and reference actions: fixtures, next_url paging, errors, fuzzing."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantivista.errors import (
    EntitlementError,
    MalformedResponseError,
    ProviderError,
    RateLimitedError,
)
from quantivista.model.timeframe import Timeframe
from quantivista.providers._parsing import guarded
from quantivista.providers.base import BarRequest
from quantivista.providers.polygon import (
    PolygonProvider,
    _checked_rows,
    parse_aggs,
    parse_dividends,
    parse_splits,
)

from .conftest import FIXTURES, LocalServer, Route, cassette, fixture_bytes

P = "polygon"
AGGS_FIXTURES = sorted(p.name for p in (FIXTURES / P).glob("aggs_*.json"))


def test_daily_aggs_fixture() -> None:
    bars, nxt = parse_aggs(
        fixture_bytes(P, "aggs_AAPL_1day_2023-01-01_2023-01-10.json"), "AAPL", "1d"
    )
    assert nxt is None and bars.height == 6
    # 1672722000000 ms = 2023-01-03 05:00 UTC = 00:00 New York
    assert bars["ts"][0] == datetime(2023, 1, 3, tzinfo=UTC)
    assert bars["ts"][-1] == datetime(2023, 1, 10, tzinfo=UTC)
    row = bars.row(0, named=True)
    assert (row["open"], row["high"], row["low"], row["close"]) == (130.28, 130.9, 124.17, 125.07)
    assert row["volume"] == 112117471.0 and row["vwap"] == 125.725 and row["trades"] == 1021065


def test_gzip_cassette_body_matches_the_decoded_fixture() -> None:
    import gzip

    status, body = cassette(P, "aggs_AAPL_1day_2023-01-01_2023-01-10.cassette.yaml")
    assert status == 200
    bars, _ = parse_aggs(gzip.decompress(body), "AAPL", "1d")
    assert bars["close"].to_list() == [125.07, 126.36, 125.02, 129.62, 130.15, 130.73]


def test_2005_client_mock() -> None:
    bars, _ = parse_aggs(
        fixture_bytes(P, "aggs_AAPL_1day_2005-04-01_2005-04-04.client_mock.json"), "AAPL"
    )
    assert bars["ts"].to_list() == [
        datetime(2005, 4, 1, tzinfo=UTC),
        datetime(2005, 4, 4, tzinfo=UTC),
    ]
    assert bars["close"].to_list() == [1.4604, 1.4675]
    assert bars["volume"].to_list() == [642646396.0, 578172308.0]


def test_intraday_ms_stamps_stay_utc() -> None:
    body = json.dumps({"status": "OK", "results": [
        {"o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 10, "t": 1672756200000}]})  # fmt: skip
    bars, _ = parse_aggs(body, "AAPL", "1m")
    assert bars["ts"][0] == datetime(2023, 1, 3, 14, 30, tzinfo=UTC)
    assert bars["vwap"][0] is None and bars["trades"][0] is None


def test_reference_splits_and_dividends() -> None:
    splits, _ = parse_splits(fixture_bytes(P, "v3_reference_splits.client_mock.json"))
    assert splits.height == 10
    googl = splits.filter(splits["symbol"] == "GOOGL").row(0)
    assert googl == ("GOOGL", "split", date(2022, 7, 18), 20.0, None, None, None, P)
    assert splits.filter(splits["symbol"] == "BRW")["ratio"][0] == 0.5  # reverse split 2:1
    divs, _ = parse_dividends(fixture_bytes(P, "v3_reference_dividends.client_mock.json"))
    assert divs.height == 10
    assert divs.filter(divs["symbol"] == "AIRTP")["ex_date"].to_list() == [
        date(2023, 8, 11),
        date(2023, 11, 13),
    ]
    assert divs.filter(divs["symbol"] == "CSSEN")["amount"].unique().to_list() == [0.59375]


def test_status_errors() -> None:
    limit = {
        "status": "ERROR",
        "error": "You've exceeded the maximum requests per minute, please wait",
    }
    with pytest.raises(RateLimitedError):
        parse_aggs(json.dumps(limit), "AAPL")
    denied = {
        "status": "NOT_AUTHORIZED",
        "message": "Your plan doesn't include this data timeframe",
    }
    with pytest.raises(EntitlementError):
        parse_aggs(json.dumps(denied), "AAPL")


def test_missing_results_means_no_bars() -> None:
    bars, nxt = parse_aggs('{"status":"OK","resultsCount":0}', "AAPL")
    assert bars.is_empty() and nxt is None


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4)
    ),
    max_leaves=20,
)
field = st.none() | st.floats() | st.integers(-(2**70), 2**70) | st.text(max_size=5)
aggs_like = st.fixed_dictionaries(
    {"status": st.sampled_from(["OK", "ERROR", "DELAYED", "NOT_AUTHORIZED", 5])},
    optional={
        "results": st.lists(
            st.dictionaries(st.sampled_from([*list("ohlcvtn"), "vw"]), field), max_size=3
        ),
        "next_url": json_values,
    },
)
ref_like = st.fixed_dictionaries(
    {"results": st.lists(st.dictionaries(st.sampled_from(
        ["split_to", "split_from", "execution_date", "ticker", "cash_amount", "ex_dividend_date",
         "dividend_type"]), field), max_size=3)}
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    body=st.binary(max_size=200)
    | json_values.map(json.dumps)
    | (aggs_like | ref_like).map(json.dumps)
)
def test_fuzzed_bodies_raise_only_provider_errors(body: bytes | str) -> None:
    for parse in (parse_aggs, parse_splits, parse_dividends):
        with contextlib.suppress(ProviderError):
            parse(body, "AAPL")


def test_client_follows_next_url_and_re_adds_the_key(local_server: LocalServer) -> None:
    data = json.loads(fixture_bytes(P, "aggs_AAPL_1day_2023-01-01_2023-01-10.json"))
    page2 = "/polygon/v2/aggs/ticker/AAPL/range/1/day/1672894800001/2023-01-10"
    first = dict(
        data, results=data["results"][:3], next_url=f"{local_server.url}{page2}?cursor=abc"
    )
    second = dict(data, results=data["results"][3:])
    local_server.routes["/polygon/v2/aggs/ticker/AAPL/range/1/day/2023-01-01/2023-01-10"] = Route(
        200, json.dumps(first).encode()
    )
    local_server.routes["/polygon/v2/aggs/ticker/AAPL/range/1/day/1672894800001/2023-01-10"] = (
        Route(200, json.dumps(second).encode())
    )
    client = PolygonProvider(api_key="PKEY", base_url=local_server.url + "/polygon")
    result = client.fetch_bars(BarRequest.of("AAPL", "2023-01-01", "2023-01-10"))
    assert result.bars.height == 6
    assert result.bars["close"].to_list() == [125.07, 126.36, 125.02, 129.62, 130.15, 130.73]
    one, two = local_server.requests
    assert one.query["adjusted"] == ["false"] and one.query["apiKey"] == ["PKEY"]
    assert two.query == {"cursor": ["abc"], "apiKey": ["PKEY"]}
    assert len(result.raw) == 2 and all("PKEY" not in r.url for r in result.raw)


def test_client_429_with_retry_after(local_server: LocalServer) -> None:
    body = b'{"status":"ERROR","error":"You\'ve exceeded the maximum requests per minute"}'
    local_server.routes["/v2/aggs/ticker/AAPL/range/1/day/2023-01-01/2023-01-10"] = Route(
        429, body, {"Retry-After": "20"}
    )
    client = PolygonProvider(api_key="PKEY", base_url=local_server.url)
    with pytest.raises(RateLimitedError) as info:
        client.fetch_bars(BarRequest.of("AAPL", "2023-01-01", "2023-01-10"))
    assert info.value.retry_after_s == 20.0 and "PKEY" not in str(info.value)


def test_client_fetches_actions_when_asked(local_server: LocalServer) -> None:
    local_server.routes["/v2/aggs/ticker/GOOGL/range/1/day/2022-07-01/2022-07-31"] = Route(
        200, b'{"status":"OK","results":[]}'
    )
    local_server.routes["/v3/reference/splits"] = Route(
        200, fixture_bytes(P, "v3_reference_splits.client_mock.json")
    )
    local_server.routes["/v3/reference/dividends"] = Route(200, b'{"status":"OK","results":[]}')
    client = PolygonProvider(api_key="K", base_url=local_server.url, include_actions=True)
    result = client.fetch_bars(BarRequest.of("GOOGL", "2022-07-01", "2022-07-31"))
    assert result.actions.rows() == [
        ("GOOGL", "split", date(2022, 7, 18), 20.0, None, None, None, P)
    ]
    assert local_server.requests[1].query["execution_date.gte"] == ["2022-07-01"]


def test_real_host_next_url_is_kept_on_the_overridden_base(local_server: LocalServer) -> None:
    data = json.loads(fixture_bytes(P, "aggs_AAPL_1day_2023-01-01_2023-01-10.json"))
    real_next = "https://api.polygon.io/v2/aggs/ticker/AAPL/range/1/day/1672894800001/2023-01-10"
    first = dict(data, results=data["results"][:3], next_url=real_next + "?cursor=xyz")
    local_server.routes["/p/v2/aggs/ticker/AAPL/range/1/day/2023-01-01/2023-01-10"] = Route(
        200, json.dumps(first).encode()
    )
    local_server.routes["/p/v2/aggs/ticker/AAPL/range/1/day/1672894800001/2023-01-10"] = Route(
        200, json.dumps(dict(data, results=data["results"][3:])).encode()
    )
    client = PolygonProvider(api_key="K", base_url=local_server.url + "/p")
    result = client.fetch_bars(BarRequest.of("AAPL", "2023-01-01", "2023-01-10"))
    assert result.bars.height == 6
    assert local_server.requests[1].query["cursor"] == ["xyz"]


def _both_paths(rows: list[object], tf: str) -> tuple[object, object]:
    """Return what parse_aggs and the checked (column at a time) path make of `rows`."""
    body = json.dumps({"status": "OK", "results": rows})
    outcomes: list[object] = []
    for parse in (parse_aggs, guarded("polygon")(_checked_of)):
        try:
            outcomes.append(parse(body, "aapl ", tf))
        except MalformedResponseError as exc:
            outcomes.append(type(exc))
    return outcomes[0], outcomes[1]


def _checked_of(body: str, symbol: str, tf: str) -> tuple[pl.DataFrame, None]:
    rows = json.loads(body)["results"]
    return _checked_rows(rows, symbol, Timeframe.parse(tf)), None


@pytest.mark.parametrize("name", AGGS_FIXTURES)
@pytest.mark.parametrize("tf", ["1d", "1m"])
def test_the_one_pass_parser_equals_the_checked_one_on_the_recorded_bodies(
    name: str, tf: str
) -> None:
    rows = json.loads(fixture_bytes(P, name))["results"]
    fast, checked = _both_paths(rows, tf)
    assert isinstance(fast, tuple) and isinstance(checked, tuple)
    assert fast[0].height == len(rows) > 0
    assert_frame_equal(fast[0], checked[0])


number = (
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.integers(0, 999).map(str) | st.just(" 1.5") | st.just("x")
)  # fmt: skip
agg_row = st.fixed_dictionaries(
    {"t": st.integers(0, 2**41) | number, **dict.fromkeys("ohlcv", number)},
    optional={"vw": number, "n": number, "otc": st.booleans()},
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(agg_row | st.fixed_dictionaries({"t": st.integers(0, 2**41)}),
                     min_size=1, max_size=5),
       tf=st.sampled_from(["1d", "1h"]))  # fmt: skip
def test_the_one_pass_parser_equals_the_checked_one_on_any_rows(
    rows: list[dict[str, object]], tf: str
) -> None:
    fast, checked = _both_paths(rows, tf)
    if isinstance(fast, tuple) and isinstance(checked, tuple):
        assert_frame_equal(fast[0], checked[0])
    else:
        assert fast == checked  # the same error


@pytest.mark.parametrize("t", [-(2**53), 2**53, -9_000_000_000_000_000])
@pytest.mark.parametrize("odd", [False, True])
def test_a_bar_time_out_of_every_dates_range_is_a_malformed_response(t: int, odd: bool) -> None:
    row = {"t": t, "o": "1" if odd else 1.0, "h": 1.0, "l": 1.0, "c": 1.0, "v": 1.0}
    with pytest.raises(MalformedResponseError):  # not polars' panic (a BaseException)
        parse_aggs(json.dumps({"status": "OK", "results": [row]}), "AAPL", "1d")
