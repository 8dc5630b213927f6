"""Fault injection occurs at the configured rates, deterministically; violations are exact."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from quantivista.config import ProviderFaultSettings, RateWindow, Settings
from quantivista.providers.simulator import SimulatedMarket
from quantivista.providers.simulator.server import SimulatorHandle

PAYER = "WUWCGE"
N = 400


def quote_url(sim: SimulatorHandle) -> str:
    return sim.base_url("finnhub") + "/api/v1/quote"


def hammer(sim: SimulatorHandle, n: int = N) -> list[httpx.Response]:
    with httpx.Client(timeout=10) as client:
        return [
            client.get(quote_url(sim), params={"symbol": PAYER, "token": "t"}) for _ in range(n)
        ]


def within(count: int, n: int, rate: float) -> bool:
    """Binomial count within 4 standard deviations of n * rate."""
    sd = math.sqrt(n * rate * (1 - rate))
    return abs(count - n * rate) <= 4 * sd


@pytest.mark.parametrize(
    ("field", "kind"),
    [
        ("error_rate", "server_error"),
        ("error_body_rate", "error_body"),
        ("malformed_rate", "malformed"),
    ],
)
def test_per_call_fault_occurs_at_configured_rate(
    sim: SimulatorHandle, field: str, kind: str
) -> None:
    sim.configure("finnhub", ProviderFaultSettings(**{field: 0.25}))
    responses = hammer(sim)
    if kind == "server_error":
        hits = sum(r.status_code in (500, 502, 503) for r in responses)
    elif kind == "error_body":
        hits = sum(r.status_code == 200 and r.json()["t"] == 0 for r in responses)
    else:
        hits, variants = 0, set()
        for r in responses:
            try:
                r.json()
            except ValueError:
                hits += 1
                text = r.text
                variants.add("empty" if not text else "html" if "<html>" in text else "cut")
        assert variants == {"empty", "html", "cut"}
    assert within(hits, N, 0.25), hits
    stats = sim.stats()["providers"]["finnhub"]
    assert stats["faults"] == {kind: hits}
    assert stats["calls"] == N


def test_faults_are_deterministic_for_a_seed(sim: SimulatorHandle) -> None:
    sim.configure("finnhub", ProviderFaultSettings(error_rate=0.3, error_body_rate=0.2))
    first = [r.status_code for r in hammer(sim, 60)]
    sim.reset()
    second = [r.status_code for r in hammer(sim, 60)]
    assert first == second
    assert 500 in {s // 100 * 100 for s in first}


def test_timeouts_hang_then_answer_504(sim: SimulatorHandle) -> None:
    sim.configure("finnhub", ProviderFaultSettings(timeout_rate=0.2, hang_s=0.05))
    started = time.perf_counter()
    responses = hammer(sim, 100)
    hung = sum(r.status_code == 504 for r in responses)
    assert within(hung, 100, 0.2)
    assert time.perf_counter() - started >= hung * 0.05
    with pytest.raises(httpx.ReadTimeout):  # a real client times out on a long hang
        sim.configure("finnhub", ProviderFaultSettings(timeout_rate=1.0, hang_s=5))
        httpx.get(quote_url(sim), params={"symbol": PAYER, "token": "t"}, timeout=0.2)


def test_latency_delays_every_call(sim: SimulatorHandle) -> None:
    sim.configure("finnhub", ProviderFaultSettings(latency_ms=40, latency_jitter_ms=20))
    started = time.perf_counter()
    hammer(sim, 10)
    assert time.perf_counter() - started >= 10 * 0.04


def test_down_provider_answers_503_everywhere(sim: SimulatorHandle) -> None:
    sim.configure("yahoo", ProviderFaultSettings(down=True))
    r = httpx.get(sim.base_url("yahoo") + f"/v8/finance/chart/{PAYER}")
    assert r.status_code == 503
    assert sim.stats()["providers"]["yahoo"]["faults"] == {"down": 1}
    ok = httpx.get(quote_url(sim), params={"symbol": PAYER, "token": "t"})
    assert ok.status_code == 200  # other providers keep serving


def test_bar_faults_hit_the_configured_share_of_bars(
    sim: SimulatorHandle, market: SimulatedMarket
) -> None:
    sim.configure("polygon", ProviderFaultSettings(missing_bar_rate=0.1, outlier_rate=0.05))
    url = sim.base_url("polygon") + f"/v2/aggs/ticker/{PAYER}/range/1/day/2012-01-01/2026-11-20"
    body = httpx.get(url, params={"apiKey": "k", "adjusted": "false", "limit": 50000}).json()
    bars = market.bars(PAYER, "2012-01-01", "2026-11-20")
    served = {r["t"]: r["c"] for r in body["results"]}
    missing = bars.height - len(served)
    assert within(missing, bars.height, 0.1)
    truth = dict(zip(bars["ts"].dt.date(), bars["close"], strict=True))
    ny = ZoneInfo("America/New_York")
    scaled = [c / truth[datetime.fromtimestamp(t / 1000, ny).date()] for t, c in served.items()]
    outliers = [x for x in scaled if abs(x - 1) > 1e-6]
    assert within(len(outliers), len(served), 0.05)
    assert {round(x, 3) for x in outliers} <= {10.0, 0.1}
    faults = sim.stats()["providers"]["polygon"]["faults"]
    assert faults == {"missing_bar": missing, "outlier_bar": len(outliers)}
    again = httpx.get(url, params={"apiKey": "k", "adjusted": "false", "limit": 50000}).json()
    assert again["results"] == body["results"]  # a bad feed is consistently bad


def test_violations_are_counted_exactly_with_retry_after(sim: SimulatorHandle) -> None:
    sim.configure("polygon", ProviderFaultSettings(rate_limits=(RateWindow(calls=3, seconds=60),)))
    url = sim.base_url("polygon") + f"/v2/aggs/ticker/{PAYER}/range/1/day/2026-11-02/2026-11-20"
    statuses = [httpx.get(url, params={"apiKey": "k"}) for _ in range(10)]
    assert [r.status_code for r in statuses] == [200] * 3 + [429] * 7
    assert 1 <= int(statuses[-1].headers["Retry-After"]) <= 60
    assert "exceeded the maximum requests per minute" in statuses[-1].json()["error"]
    stats = httpx.get(sim.url + "/_sim/stats").json()["providers"]["polygon"]
    assert (stats["calls"], stats["served"], stats["violations"]) == (10, 3, 7)
    httpx.post(sim.url + "/_sim/reset")
    assert sim.stats()["providers"]["polygon"]["violations"] == 0


def test_windows_slide_and_several_windows_apply_at_once(sim: SimulatorHandle) -> None:
    limits = (RateWindow(calls=2, seconds=0.3), RateWindow(calls=5, seconds=60))
    sim.configure("finnhub", ProviderFaultSettings(rate_limits=limits, rate_limit_slack_s=0))
    statuses = []
    for _ in range(3):  # a polite client for the short window: 2 calls, then wait it out
        statuses += [r.status_code for r in hammer(sim, 2)]
        time.sleep(0.32)
    # ... still breaks the 60 s window (5 calls) with its sixth call
    assert statuses == [200] * 5 + [429]
    stats = sim.stats()["providers"]["finnhub"]
    assert (stats["calls"], stats["violations"]) == (6, 1)


def test_alpha_vantage_rate_limit_is_an_http_200_note(sim: SimulatorHandle) -> None:
    sim.configure(
        "alpha_vantage", ProviderFaultSettings(rate_limits=(RateWindow(calls=1, seconds=60),))
    )
    url = sim.base_url("alpha_vantage") + "/query"
    params = {"function": "GLOBAL_QUOTE", "symbol": PAYER, "apikey": "k"}
    assert "Global Quote" in httpx.get(url, params=params).json()
    limited = httpx.get(url, params=params)
    assert limited.status_code == 200
    assert limited.json()["Note"].startswith("Thank you for using Alpha Vantage!")
    assert sim.stats()["providers"]["alpha_vantage"]["violations"] == 1


def test_fault_settings_load_from_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "qv.toml"
    toml.write_text(
        "[simulator_server]\nport = 9999\n"
        "[simulator_server.providers.yahoo]\nerror_rate = 0.2\n"
        "rate_limits = [{calls = 5, seconds = 60}, {calls = 25, seconds = 86400}]\n"
    )
    monkeypatch.setenv("QV_CONFIG_FILE", str(toml))
    sim = Settings().simulator_server
    assert sim.port == 9999
    assert sim.faults_for("yahoo").error_rate == 0.2
    assert sim.faults_for("yahoo").rate_limits[1] == RateWindow(calls=25, seconds=86400)
    assert sim.faults_for("polygon") == ProviderFaultSettings()


def test_per_call_rates_must_fit_in_one() -> None:
    with pytest.raises(ValueError, match="sum to"):
        ProviderFaultSettings(error_rate=0.7, timeout_rate=0.5)


def test_concurrent_clients_are_counted_exactly(sim: SimulatorHandle) -> None:
    sim.configure("finnhub", ProviderFaultSettings(rate_limits=(RateWindow(calls=10, seconds=60),)))

    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(max_workers=8) as pool:
        params = {"symbol": PAYER, "token": "t"}
        statuses = list(
            pool.map(lambda _: client.get(quote_url(sim), params=params).status_code, range(40))
        )
    assert statuses.count(200) == 10 and statuses.count(429) == 30
    stats = sim.stats()["providers"]["finnhub"]
    assert (stats["calls"], stats["served"], stats["violations"]) == (40, 10, 30)
