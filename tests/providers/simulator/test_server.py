"""Each vendor endpoint answers in the recorded wire format, with the market's values."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import pytest

from quantivista.providers.simulator import SimulatedMarket
from quantivista.providers.simulator.server import SimulatorHandle

from .helpers import fixture_json, fixture_yaml_body, needs_fixtures, shape

NY = ZoneInfo("America/New_York")
SPLITTER = "KNPGRA"  # 2:1 split on 2021-11-09, no dividends (seed 7, five instruments)
PAYER = "WUWCGE"  # quarterly dividends and a special dividend

pytestmark = needs_fixtures


def get(url: str, **params: object) -> httpx.Response:
    # an empty `params` would wipe a query already in `url` (next_url cursors)
    return httpx.get(url, params=params or None, timeout=10)


def raw(market: SimulatedMarket, symbol: str, start: str, end: str, tf: str = "1d") -> pl.DataFrame:
    return market.bars(symbol, start, end, tf)


# -- Alpha Vantage -----------------------------------------------------------------------------
def test_alpha_vantage_daily_matches_fixture_shape_and_raw_market_values(
    sim: SimulatorHandle, market: SimulatedMarket
) -> None:
    r = get(
        sim.base_url("alpha_vantage") + "/query",
        function="TIME_SERIES_DAILY", symbol=PAYER, apikey="demo",
    )  # fmt: skip
    body = r.json()
    ref = fixture_json("alpha_vantage", "time_series_daily_IBM_2020-05-08.json")
    assert r.status_code == 200
    assert set(body) == set(ref)
    assert set(body["Meta Data"]) == set(ref["Meta Data"])
    series = body["Time Series (Daily)"]
    assert len(series) == 100  # compact
    days = list(series)
    assert days == sorted(days, reverse=True)  # newest first
    row = series[days[0]]
    assert set(row) == set(next(iter(ref["Time Series (Daily)"].values())))
    assert all(isinstance(v, str) for v in row.values())
    assert row["1. open"].count(".") == 1 and len(row["1. open"].split(".")[1]) == 4
    expected = raw(market, PAYER, days[-1], days[0])
    assert [float(series[d]["4. close"]) for d in reversed(days)] == expected["close"].to_list()
    assert [int(series[d]["5. volume"]) for d in reversed(days)] == expected["volume"].to_list()


def test_alpha_vantage_daily_adjusted_carries_dividends_and_adjusted_close(
    sim: SimulatorHandle, market: SimulatedMarket
) -> None:
    r = get(
        sim.base_url("alpha_vantage") + "/query", function="TIME_SERIES_DAILY_ADJUSTED",
        symbol=PAYER, outputsize="full", apikey="demo",
    )  # fmt: skip
    body = r.json()
    ref = fixture_json("alpha_vantage", "time_series_daily_adjusted_IBM_dividend_2020-05-07.json")
    series = body["Time Series (Daily)"]
    assert set(next(iter(series.values()))) == set(next(iter(ref["Time Series (Daily)"].values())))
    assert body["Meta Data"]["4. Output Size"] == "Full size"
    divs = market.actions(PAYER).filter(pl.col("action_type").str.contains("dividend"))
    paid = {d: float(v["7. dividend amount"]) for d, v in series.items()}
    for ex_date, amount in divs.select("ex_date", "amount").iter_rows():
        assert paid[str(ex_date)] == pytest.approx(amount, abs=5e-5)
    assert sum(1 for v in paid.values() if v > 0) == divs.height
    # the latest day is unadjusted; the earliest is adjusted down by every dividend since
    newest, oldest = series[max(series)], series[min(series)]
    assert newest["5. adjusted close"] == newest["4. close"]
    assert float(oldest["5. adjusted close"]) < float(oldest["4. close"])


def test_alpha_vantage_intraday_eastern_keys_convert_back_to_market_utc(
    sim: SimulatorHandle, market: SimulatedMarket
) -> None:
    r = get(
        sim.base_url("alpha_vantage") + "/query", function="TIME_SERIES_INTRADAY",
        symbol=PAYER, interval="5min", adjusted="false", apikey="demo",
    )  # fmt: skip
    body = r.json()
    ref = fixture_json("alpha_vantage", "time_series_intraday_5min_IBM_2020-05-08.json")
    assert set(body) == {"Meta Data", "Time Series (5min)"}
    assert set(body["Meta Data"]) == set(ref["Meta Data"])
    series = body["Time Series (5min)"]
    assert len(series) == 100
    stamps = sorted(
        datetime.strptime(k, "%Y-%m-%d %H:%M:%S").replace(tzinfo=NY).astimezone(UTC) for k in series
    )
    bars = raw(market, PAYER, "2026-11-01", "2026-11-22", "5m").tail(100)
    assert stamps == bars["ts"].to_list()
    first = series[min(series)]
    assert float(first["4. close"]) == bars["close"][0]


def test_alpha_vantage_csv_is_newest_first_with_crlf(sim: SimulatorHandle) -> None:
    r = get(
        sim.base_url("alpha_vantage") + "/query", function="TIME_SERIES_DAILY",
        symbol=PAYER, datatype="csv", apikey="demo",
    )  # fmt: skip
    lines = r.text.split("\r\n")
    assert lines[0] == "timestamp,open,high,low,close,volume"
    assert lines[1][:10] > lines[2][:10]
    assert len([x for x in lines[1:] if x]) == 100


def test_alpha_vantage_global_quote_matches_fixture_keys(
    sim: SimulatorHandle, market: SimulatedMarket
) -> None:
    body = get(
        sim.base_url("alpha_vantage") + "/query", function="GLOBAL_QUOTE", symbol=PAYER,
        apikey="demo",
    ).json()  # fmt: skip
    ref = fixture_json("alpha_vantage", "global_quote_IBM_2020-05-08.json")
    assert shape(body) == shape(ref)
    last = raw(market, PAYER, "2026-11-01", "2026-11-22").tail(2)
    assert float(body["Global Quote"]["05. price"]) == last["close"][1]
    assert float(body["Global Quote"]["08. previous close"]) == last["close"][0]
    assert body["Global Quote"]["10. change percent"].endswith("%")


def test_alpha_vantage_errors_are_http_200_bodies(sim: SimulatorHandle) -> None:
    url = sim.base_url("alpha_vantage") + "/query"
    unknown = get(url, function="TIME_SERIES_DAILY", symbol="NOSUCH", apikey="demo")
    assert unknown.status_code == 200
    assert unknown.json() == fixture_json("alpha_vantage", "error_message_invalid_symbol.json")
    keyless = get(url, function="TIME_SERIES_DAILY", symbol=PAYER)
    assert keyless.json() == fixture_json("alpha_vantage", "error_message_missing_apikey.json")


# -- Yahoo -------------------------------------------------------------------------------------
def _epoch(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


def test_yahoo_daily_is_split_adjusted_with_events(
    sim: SimulatorHandle, market: SimulatedMarket
) -> None:
    r = get(
        sim.base_url("yahoo") + f"/v8/finance/chart/{SPLITTER}", interval="1d",
        period1=_epoch("2021-10-01"), period2=_epoch("2021-12-01"), events="div,splits",
    )  # fmt: skip
    body = r.json()
    ref = fixture_json("yahoo", "chart_AAPL_1d_2020-08-31_2020-11-07_split_dividend.json")
    res, ref_res = body["chart"]["result"][0], ref["chart"]["result"][0]
    assert body["chart"]["error"] is None
    assert set(res["meta"]) == set(ref_res["meta"])
    assert set(res) == {"meta", "timestamp", "events", "indicators"}
    assert set(res["indicators"]) == set(ref_res["indicators"])
    assert set(res["indicators"]["quote"][0]) == set(ref_res["indicators"]["quote"][0])
    split = next(iter(res["events"]["splits"].values()))
    assert set(split) == set(next(iter(ref_res["events"]["splits"].values())))
    assert (split["numerator"], split["denominator"], split["splitRatio"]) == (2, 1, "2:1")
    bars = raw(market, SPLITTER, "2021-10-01", "2021-11-30")
    # stamps are the 09:30 New York open of each session
    opens = [datetime.fromtimestamp(t, NY) for t in res["timestamp"]]
    assert {(t.hour, t.minute) for t in opens} == {(9, 30)}
    assert [t.date() for t in opens] == bars["ts"].dt.date().to_list()
    split_day = date(2021, 11, 9)
    assert split["date"] == res["timestamp"][[t.date() for t in opens].index(split_day)]
    factor = [2.0 if t.date() < split_day else 1.0 for t in opens]
    closes = res["indicators"]["quote"][0]["close"]
    restored = [c * f for c, f in zip(closes, factor, strict=True)]
    assert restored == pytest.approx(bars["close"].to_list(), rel=1e-12)
    volumes = res["indicators"]["quote"][0]["volume"]
    assert [v / f for v, f in zip(volumes, factor, strict=True)] == bars["volume"].to_list()


def test_yahoo_dividends_are_events_and_adjclose_is_lower(
    sim: SimulatorHandle, market: SimulatedMarket
) -> None:
    special = (
        market.actions(PAYER).filter(pl.col("action_type") == "special_dividend").row(0, named=True)
    )
    assert special["ex_date"] == date(2022, 12, 1)
    before = market.daily(PAYER, special["ex_date"] - timedelta(days=7), special["ex_date"])
    last_close = before.filter(pl.col("ts").dt.date() < special["ex_date"])["close"][-1]
    body = get(
        sim.base_url("yahoo") + f"/v8/finance/chart/{PAYER}", interval="1d",
        period1=_epoch("2022-11-01"), period2=_epoch("2022-12-31"), events="div",
    ).json()  # fmt: skip
    res = body["chart"]["result"][0]
    assert "splits" not in res["events"]
    amounts = sorted(d["amount"] for d in res["events"]["dividends"].values())
    assert amounts[-1] == pytest.approx(special["amount"])  # the special dividend of 2022-12-01
    adj = res["indicators"]["adjclose"][0]["adjclose"]
    close = res["indicators"]["quote"][0]["close"]
    ratio = [a / c for a, c in zip(adj, close, strict=True)]
    assert max(ratio) < 1.0  # later dividends still adjust these closes down
    assert ratio[-1] / ratio[0] == pytest.approx(1 / (1 - special["amount"] / last_close), rel=0.05)


def test_yahoo_empty_window_and_unknown_symbol_match_fixtures(sim: SimulatorHandle) -> None:
    weekend = get(
        sim.base_url("yahoo") + f"/v8/finance/chart/{PAYER}", interval="1m",
        period1=_epoch("2026-11-21"), period2=_epoch("2026-11-22"),
    )  # fmt: skip
    ref = fixture_json("yahoo", "chart_AAPL_1m_weekend_empty.json")
    res, ref_res = weekend.json()["chart"]["result"][0], ref["chart"]["result"][0]
    assert weekend.status_code == 200
    assert set(res) == set(ref_res) == {"meta", "indicators"}
    assert res["indicators"] == {"quote": [{}]}
    missing = get(sim.base_url("yahoo") + "/v8/finance/chart/NOSUCH")
    assert missing.status_code == 404
    assert missing.json() == fixture_json("yahoo", "chart_error_404_not_found_quoted.json")


def test_yahoo_intraday_limits_answer_422(sim: SimulatorHandle) -> None:
    r = get(
        sim.base_url("yahoo") + f"/v8/finance/chart/{PAYER}", interval="5m",
        period1=_epoch("2025-01-02"), period2=_epoch("2025-01-03"),
    )  # fmt: skip
    assert r.status_code == 422
    assert shape(r.json()) == shape(fixture_json("yahoo", "chart_error_422_range_quoted.json"))
    assert "within the last 60 days" in r.json()["chart"]["error"]["description"]


# -- Polygon -----------------------------------------------------------------------------------
def test_polygon_aggregates_match_fixture_and_page_with_next_url(
    sim: SimulatorHandle, market: SimulatedMarket
) -> None:
    base = sim.base_url("polygon")
    path = f"/v2/aggs/ticker/{SPLITTER}/range/1/day/2021-10-01/2021-12-31"
    ref = fixture_json("polygon", "aggs_AAPL_1day_2023-01-01_2023-01-10.json")
    whole = get(base + path, apiKey="k").json()
    assert shape(whole) == shape(ref)
    pages, url, params = [], base + path, {"apiKey": "k", "limit": 7}
    while True:
        body = get(url, **params).json()
        pages.append(body)
        if "next_url" not in body:
            break
        assert "apiKey" not in body["next_url"]
        assert body["next_url"].startswith(base + f"/v2/aggs/ticker/{SPLITTER}/range/1/day/")
        # re-append the key as real clients must (httpx `params` would replace the cursor)
        url, params = str(httpx.URL(body["next_url"]).copy_add_param("apiKey", "k")), {}
    assert len(pages) == -(-whole["resultsCount"] // 7)
    assert [r for p in pages for r in p["results"]] == whole["results"]
    bars = raw(market, SPLITTER, "2021-10-01", "2021-12-31")
    got = whole["results"]
    midnight = [datetime.fromtimestamp(r["t"] / 1000, NY) for r in got]
    assert {(t.hour, t.minute) for t in midnight} == {(0, 0)}
    assert [t.date() for t in midnight] == bars["ts"].dt.date().to_list()
    factor = [2.0 if t.date() < date(2021, 11, 9) else 1.0 for t in midnight]
    restored = [r["c"] * f for r, f in zip(got, factor, strict=True)]
    assert restored == pytest.approx(bars["close"].to_list(), rel=1e-12)
    unadjusted = get(base + path, apiKey="k", adjusted="false").json()["results"]
    assert [r["c"] for r in unadjusted] == bars["close"].to_list()


def test_polygon_limit_counts_minutes_and_desc_pages_backwards(sim: SimulatorHandle) -> None:
    base = sim.base_url("polygon")
    path = f"/v2/aggs/ticker/{PAYER}/range/5/minute/2026-11-16/2026-11-20"
    first = get(base + path, apiKey="k", limit=500).json()
    assert first["resultsCount"] == 100  # 500 base minutes = 100 five-minute bars
    desc = get(base + path, apiKey="k", limit=500, sort="desc").json()
    ts = [r["t"] for r in desc["results"]]
    assert ts == sorted(ts, reverse=True)
    nxt = get(str(httpx.URL(desc["next_url"]).copy_add_param("apiKey", "k"))).json()
    assert nxt["results"][0]["t"] < ts[-1]


def test_polygon_unknown_ticker_and_missing_key(sim: SimulatorHandle) -> None:
    base = sim.base_url("polygon")
    unknown = get(base + "/v2/aggs/ticker/NOSUCH/range/1/day/2024-01-01/2024-02-01", apiKey="k")
    assert unknown.status_code == 200
    assert unknown.json()["resultsCount"] == 0 and "results" not in unknown.json()
    keyless = get(base + f"/v2/aggs/ticker/{PAYER}/range/1/day/2024-01-01/2024-02-01")
    assert keyless.status_code == 401 and keyless.json()["status"] == "ERROR"


# -- Finnhub -----------------------------------------------------------------------------------
def test_finnhub_candles_quote_and_no_data_match_fixtures(
    sim: SimulatorHandle, market: SimulatedMarket
) -> None:
    base = sim.base_url("finnhub") + "/api/v1"
    t0, t1 = _epoch("2026-11-02"), _epoch("2026-11-21")
    body = get(
        base + "/stock/candle", symbol=PAYER, resolution="D", token="t", **{"from": t0, "to": t1}
    ).json()
    assert shape(body) == shape(fixture_json("finnhub", "stock_candle_doc_sample.json"))
    bars = raw(market, PAYER, "2026-11-02", "2026-11-20")
    assert body["c"] == bars["close"].to_list()
    assert [datetime.fromtimestamp(t, NY).hour for t in body["t"]] == [0] * bars.height
    intraday = get(
        base + "/stock/candle", symbol=PAYER, resolution="5", token="t",
        **{"from": _epoch("2026-11-20"), "to": _epoch("2026-11-21")},
    ).json()  # fmt: skip
    minute_bars = raw(market, PAYER, "2026-11-20", "2026-11-20", "5m")
    assert intraday["t"] == minute_bars["ts"].dt.epoch("s").to_list()
    empty = get(
        base + "/stock/candle", symbol=PAYER, resolution="D", token="t",
        **{"from": _epoch("2026-11-21"), "to": _epoch("2026-11-22")},
    )  # fmt: skip
    assert empty.json() == fixture_json("finnhub", "stock_candle_no_data.json")
    quote = get(base + "/quote", symbol=PAYER, token="t").json()
    assert set(fixture_json("finnhub", "quote_doc_sample.json")) <= set(quote)
    assert quote["c"] == bars["close"][-1]
    zeros = get(base + "/quote", symbol="NOSUCH", token="t").json()
    assert zeros == fixture_json("finnhub", "quote_all_zero_unknown_symbol.json")
    assert get(base + "/quote", symbol=PAYER).status_code == 401


# -- IEX Cloud ---------------------------------------------------------------------------------
def test_iex_chart_and_quote_match_recorded_keys(
    sim: SimulatorHandle, market: SimulatedMarket
) -> None:
    base = sim.base_url("iex_cloud") + f"/stable/stock/{SPLITTER}"
    rows = get(base + "/chart/5d", token="pk").json()
    ref = fixture_yaml_body("iex_cloud", "chart_MSFT_5d.yml")
    assert list(rows[0]) == list(ref[0])
    assert shape(rows[0]) == shape(ref[0])
    bars = raw(market, SPLITTER, rows[0]["date"], rows[-1]["date"])
    assert [r["uClose"] for r in rows] == bars["close"].to_list()
    minutes = get(base + "/chart/1d", token="pk", chartInterval=10).json()
    ref_min = fixture_yaml_body("iex_cloud", "chart_MSFT_1d_intraday_chartInterval10.yml")
    assert list(minutes[0]) == list(ref_min[0])
    assert [m["minute"] for m in minutes[:3]] == ["09:30", "09:40", "09:50"]
    quote = get(base + "/quote", token="pk").json()
    assert set(quote) == set(fixture_yaml_body("iex_cloud", "quote_MSFT.yml"))
    assert quote["close"] == quote["latestPrice"] == bars["close"][-1]
    unknown = get(sim.base_url("iex_cloud") + "/stable/stock/NOSUCH/chart/5d", token="pk")
    assert (unknown.status_code, unknown.text) == (404, "Unknown symbol")


def test_iex_chart_is_split_adjusted_and_u_fields_are_raw(sim: SimulatorHandle) -> None:
    rows = get(sim.base_url("iex_cloud") + f"/stable/stock/{SPLITTER}/chart/max", token="pk").json()
    before = next(r for r in rows if r["date"] == "2021-11-08")
    after = next(r for r in rows if r["date"] == "2021-11-09")
    assert before["close"] == pytest.approx(before["uClose"] / 2, abs=1e-4)
    assert after["close"] == after["uClose"]


def test_polygon_reference_splits_and_dividends_page_newest_first(
    sim: SimulatorHandle, market: SimulatedMarket
) -> None:
    base = sim.base_url("polygon") + "/v3/reference"
    splits = get(base + "/splits", ticker=SPLITTER, apiKey="k").json()
    ref = fixture_json("polygon", "v3_reference_splits.client_mock.json")
    assert shape(splits) == shape(ref)
    assert splits["results"] == [
        {"execution_date": "2021-11-09", "split_from": 1, "split_to": 2, "ticker": SPLITTER}
    ]
    page = get(base + "/dividends", ticker=PAYER, apiKey="k", limit=5).json()
    ref = fixture_json("polygon", "v3_reference_dividends.client_mock.json")
    assert set(page) == set(ref) | {"next_url"}
    assert set(page["results"][0]) == set(ref["results"][0])
    seen = page["results"]
    while "next_url" in page:
        page = get(str(httpx.URL(page["next_url"]).copy_add_param("apiKey", "k"))).json()
        seen += page["results"]
    paid = market.actions(PAYER).filter(pl.col("action_type").str.contains("dividend"))
    assert [r["ex_dividend_date"] for r in seen] == [
        str(d) for d in paid["ex_date"].sort(descending=True)
    ]
    assert {r["dividend_type"] for r in seen} == {"CD", "SC"}
