"""The web status page: sign-in over a real socket, tenant isolation, escaping, the SVG
charts as pure functions, and the whole page in headless Chromium driven by Playwright."""

from __future__ import annotations

import re
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest

from api.conftest import Credentials, LiveApi, live_api, make_client
from conftest import MakeBars, services_required
from quantivista.actions.adjust import adjust_bars
from quantivista.api.page.svg import candle_geometry, candles_svg, nice_ticks, quality_svg
from quantivista.config import ApiSettings, Settings, SimulatorSettings
from quantivista.platform import Platform
from quantivista.providers.simulator.market import SimulatedMarket
from quantivista.services.queries import BarQuery

OTHERS = ["FIDXUB", "EPIVJP"]


def _a_split() -> tuple[str, date, float]:
    """Return the default simulated market's first forward split of a ticker that never
    changed. The market is drawn up to today, so its split days move from day to day: the
    test looks one up instead of naming it."""
    market = SimulatedMarket()  # the defaults of SimulatorSettings
    plain = [
        i.symbol
        for i in market.instruments
        if i.former_symbol is None and i.delisted_on is None and i.symbol not in OTHERS
    ]
    splits = market.actions().filter(
        pl.col("symbol").is_in(plain)
        & (pl.col("action_type") == "split")
        & (pl.col("ratio") > 1.2)  # one whose adjustment the browser test can see
        & (pl.col("ex_date") >= date(2011, 1, 1))
    )
    first = splits.sort("ex_date", "symbol").row(0, named=True)
    return first["symbol"], first["ex_date"], first["ratio"]


SPLIT_SYMBOL, SPLIT_DAY, SPLIT_RATIO = _a_split()
SPLIT_LABEL = f"split {SPLIT_RATIO:g}:1"
CHART = f"/?symbol={SPLIT_SYMBOL}&timeframe=1d&days=120"
SVG = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True)
class PageStore:
    settings: Settings
    platform_job: str  # the platform's own job (tenant None)
    acme_job: str
    globex_job: str


@pytest.fixture(scope="module")
def page_store(tmp_path_factory: pytest.TempPathFactory) -> PageStore:
    """A store with a split, some quarantined rows, and jobs of two tenants and the platform."""
    root = tmp_path_factory.mktemp("page") / "qv"
    settings = Settings(data_dir=root, simulator=SimulatorSettings(fault_rate=0.02))
    with Platform.from_settings(settings) as p:
        own = p.ingest(
            [SPLIT_SYMBOL, *OTHERS], SPLIT_DAY - timedelta(days=60), SPLIT_DAY + timedelta(days=30)
        )
        ingestion = p.runtime.ingestion
        acme = ingestion.submit([OTHERS[0]], "2022-06-01", "2022-08-31", tenant="acme")
        ingestion.run(acme.job_id)
        globex = ingestion.submit([OTHERS[1]], "2022-06-01", "2022-08-31", tenant="globex")
        ingestion.run(globex.job_id)
    return PageStore(settings, own.job_id, acme.job_id, globex.job_id)


@pytest.fixture(scope="module")
def page_api(page_store: PageStore) -> Iterator[LiveApi]:
    with live_api(page_store.settings) as running:
        yield running


@pytest.fixture(scope="module")
def acme(page_store: PageStore) -> Credentials:
    return make_client(page_store.settings, "acme", "read:bars")


def _form(creds: Credentials, **extra: str) -> dict[str, str]:
    return {"client_id": creds.client_id, "client_secret": creds.client_secret, **extra}


@contextmanager
def _signed_in(api: LiveApi, creds: Credentials) -> Iterator[httpx.Client]:
    with api.client() as http:
        reply = http.post("/login", data=_form(creds))
        assert reply.status_code == 303, reply.text
        yield http


# -- sign-in ---------------------------------------------------------------------------------
def test_the_page_without_a_session_redirects_to_the_sign_in_form(page_api: LiveApi) -> None:
    with page_api.client() as http:
        bare = http.get("/")
        assert bare.status_code == 303 and bare.headers["location"] == "/login"
        deep = http.get(CHART)
        assert deep.status_code == 303
        assert deep.headers["location"].startswith(f"/login?next=%2F%3Fsymbol%3D{SPLIT_SYMBOL}")
        form = http.get(deep.headers["location"])
        assert form.status_code == 200 and 'name="client_secret"' in form.text
        assert f'value="/?symbol={SPLIT_SYMBOL}&amp;timeframe=1d&amp;days=120"' in form.text
        assert "default-src 'none'" in form.headers["content-security-policy"]
    with page_api.client(cookies={"qv_session": "not-a-token"}) as http:
        stale = http.get("/")
        assert stale.status_code == 303 and "qv_session=" in stale.headers["set-cookie"]


def test_signing_in_sets_an_httponly_strict_cookie_and_signing_out_clears_it(
    page_api: LiveApi, acme: Credentials
) -> None:
    with page_api.client() as http:
        reply = http.post("/login", data=_form(acme, next="/?symbol=FIDXUB"))
        assert reply.status_code == 303 and reply.headers["location"] == "/?symbol=FIDXUB"
        cookie = reply.headers["set-cookie"]
        assert cookie.startswith("qv_session=")
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/"} <= flags
        assert "secure" not in flags  # plain http here; https adds Secure
        assert any(f.startswith("max-age=") for f in flags)
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        for section in ("Store", "Providers", "Quality by day", "Recent jobs", "Quarantine"):
            assert f">{section}</h2>" in page.text
        out = http.post("/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert 'qv_session=""' in out.headers["set-cookie"] or "max-age=0" in (
            out.headers["set-cookie"].lower()
        )
        assert http.get("/").status_code == 303


def test_a_signed_in_client_skips_the_form_and_is_rate_limited_like_the_api(
    page_store: PageStore, acme: Credentials
) -> None:
    settings = page_store.settings.model_copy(update={"api": ApiSettings(rate_limits=["2/minute"])})
    with live_api(settings) as running, _signed_in(running, acme) as http:
        assert http.get("/login").headers["location"] == "/"  # counts as one request
        assert http.get("/").status_code == 200
        limited = http.get("/")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"].startswith("text/html") and "429" in limited.text


def test_a_wrong_secret_or_a_missing_scope_is_refused(
    page_api: LiveApi, page_store: PageStore, acme: Credentials
) -> None:
    no_bars = make_client(page_store.settings, "acme", "read:reference")
    with page_api.client() as http:
        wrong = http.post("/login", data={"client_id": acme.client_id, "client_secret": "nope"})
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        assert "Wrong client id or secret" in wrong.text
        unknown = http.post("/login", data={"client_id": "<b>x</b>", "client_secret": "nope"})
        assert unknown.status_code == 401 and "&lt;b&gt;x&lt;/b&gt;" in unknown.text
        assert "<b>x</b>" not in unknown.text
        lacking = http.post("/login", data=_form(no_bars))
        assert lacking.status_code == 403 and "read:bars" in lacking.text
        assert "set-cookie" not in lacking.headers
        foreign = http.post("/login", data=_form(acme), headers={"Origin": "https://evil.test"})
        assert foreign.status_code == 403 and "set-cookie" not in foreign.headers
        elsewhere = http.post("/login", data=_form(acme, next="//evil.test/"))
        assert elsewhere.headers["location"] == "/"


def test_a_tenant_sees_its_own_jobs_and_an_admin_the_platform_s_too(
    page_api: LiveApi, page_store: PageStore, acme: Credentials
) -> None:
    admin = make_client(page_store.settings, "acme", "read:bars,admin")
    with _signed_in(page_api, acme) as http:
        page = http.get("/").text
    assert page_store.acme_job in page
    assert page_store.globex_job not in page and page_store.platform_job not in page
    with _signed_in(page_api, admin) as http:
        page = http.get("/").text
    assert page_store.acme_job in page and page_store.platform_job in page
    assert page_store.globex_job not in page


def test_entitlements_limit_the_chart_and_the_symbols_offered(
    page_api: LiveApi, page_store: PageStore
) -> None:
    narrow = make_client(page_store.settings, "narrow", "read:bars")
    with Platform.from_settings(page_store.settings) as p:
        p.runtime.auth.set_tenant("narrow", symbols=[OTHERS[0]])
    with _signed_in(page_api, narrow) as http:
        own = http.get(f"/?symbol={OTHERS[0]}").text
        denied = http.get(CHART).text
    assert own.count('class="candle ') > 0 and f'value="{SPLIT_SYMBOL}"' not in own
    assert "not entitled" in denied and 'class="candle ' not in denied


def test_every_user_supplied_value_is_escaped(page_api: LiveApi, acme: Credentials) -> None:
    evil = "<script>alert(1)</script>"
    with _signed_in(page_api, acme) as http:
        reply = http.get("/", params={"symbol": evil, "timeframe": '"><svg onload=x>',
                                      "adjust": "<i>", "days": "<b>"})  # fmt: skip
    assert reply.status_code == 200
    assert "<script" not in reply.text and "<svg onload" not in reply.text
    assert "<i>" not in reply.text and "<b>" not in reply.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in reply.text
    assert "no 1d bars stored for &lt;script&gt;" in reply.text


def test_the_page_draws_one_candle_per_stored_bar_with_the_split_marked(
    page_api: LiveApi, page_store: PageStore, acme: Credentials
) -> None:
    expected = _expected_bars(page_store.settings, "none")
    with _signed_in(page_api, acme) as http:
        raw = http.get(CHART).text
        adjusted = http.get(CHART + "&adjust=all").text
    assert raw.count('class="candle ') == adjusted.count('class="candle ') == expected.height
    assert SPLIT_LABEL in raw and SPLIT_LABEL in adjusted
    assert _titles(raw) != _titles(adjusted)


def _expected_bars(settings: Settings, adjust: str) -> pl.DataFrame:
    with Platform.from_settings(settings) as p:
        stats = p.runtime.queries.status().filter(pl.col("symbol") == SPLIT_SYMBOL)
        last = stats["last_ts"].max()
        query = BarQuery.of(
            SPLIT_SYMBOL, last - timedelta(days=120), last, "1d",  # type: ignore[operator]
            adjust=adjust,  # type: ignore[arg-type]
        )  # fmt: skip
        return p.runtime.queries.bars(query)


def _titles(page: str) -> list[str]:
    return re.findall(r'<g class="candle (?:up|down)"><title>([^<]*)</title>', page)


# -- the charts as pure functions ------------------------------------------------------------
def test_one_candle_per_bar_with_the_body_inside_the_wick(make_bars: MakeBars) -> None:
    bars = make_bars(["XYZ"], 60)
    geometry = candle_geometry(bars)
    assert geometry.height == 60
    ordered = geometry.select(
        (pl.col("wick_top") <= pl.col("body_top"))
        & (pl.col("body_top") <= pl.col("body_bottom"))
        & (pl.col("body_bottom") <= pl.col("wick_bottom"))
    ).to_series()
    assert ordered.all()
    assert geometry["x"].is_sorted() and geometry["x"].n_unique() == 60
    svg = ET.fromstring(candles_svg(bars, label="XYZ <1d>"))
    candles = [g for g in svg.iter(f"{SVG}g") if "candle" in g.get("class", "")]
    assert len(candles) == 60
    for g in candles:
        wick = g.find(f"{SVG}line")
        body = g.find(f"{SVG}rect[@class='body']")
        assert wick is not None and body is not None
        y1, y2 = float(wick.get("y1", "nan")), float(wick.get("y2", "nan"))
        top, height = float(body.get("y", "nan")), float(body.get("height", "nan"))
        assert y1 - 0.01 <= top and top + height <= max(y2, top + 1.0) + 0.01
        middle = float(body.get("x", "nan")) + float(body.get("width", "nan")) / 2
        assert middle == pytest.approx(float(wick.get("x1", "nan")), abs=0.02)
    assert svg.get("aria-label") == "XYZ <1d>"  # escaped in the markup, intact once parsed


def test_adjusted_and_raw_prices_differ_before_a_split_only(make_bars: MakeBars) -> None:
    bars = make_bars(["XYZ"], 40)
    ex = bars["ts"][20].date()
    split = pl.DataFrame({"symbol": ["XYZ"], "action_type": ["split"], "ex_date": [ex],
                          "ratio": [2.0]})  # fmt: skip
    adjusted = adjust_bars(bars, split, adjust="all")
    raw_svg = candles_svg(bars, label="raw", splits=split.select("ex_date", "ratio"))
    adjusted_svg = candles_svg(adjusted, label="adjusted", splits=split.select("ex_date", "ratio"))
    raw, adj = _titles(raw_svg), _titles(adjusted_svg)
    assert len(raw) == len(adj) == 40
    assert all(r != a for r, a in zip(raw[:20], adj[:20], strict=True))
    assert raw[20:] == adj[20:]
    first_close = float(re.findall(r"C ([0-9.]+)", raw[0])[0])
    assert float(re.findall(r"C ([0-9.]+)", adj[0])[0]) == pytest.approx(first_close / 2, abs=0.01)
    assert raw_svg.count('class="split"') == 1 and "split 2:1" in raw_svg
    # the drawn bodies move too: the adjusted pre-split candles sit elsewhere on the axis
    assert (
        not candle_geometry(bars)["body_top"]
        .head(20)
        .equals(candle_geometry(adjusted)["body_top"].head(20))
    )


def test_price_ticks_are_round_and_span_the_range() -> None:
    assert nice_ticks(113.2, 187.9, 6) == [120.0, 140.0, 160.0, 180.0]
    assert nice_ticks(0.9512, 0.9987, 4) == [0.96, 0.98]
    assert nice_ticks(0.9512, 0.9987, 5) == [0.96, 0.97, 0.98, 0.99]
    assert nice_ticks(5.0, 5.0) == [5.0]
    assert nice_ticks(2.0, 1.0) == []


def test_quality_chart_draws_a_bar_per_day_and_marks_dips() -> None:
    daily = pl.DataFrame(
        {"date": [date(2024, 1, d) for d in (2, 3, 4)], "score": [1.0, 0.95, 0.999],
         "symbols": [3, 3, 2]},
        schema_overrides={"symbols": pl.UInt32},
    )  # fmt: skip
    svg = ET.fromstring(quality_svg(daily))
    columns = [g for g in svg.iter(f"{SVG}g") if "qday" in g.get("class", "")]
    assert [g.get("class") for g in columns] == ["qday ok", "qday dip", "qday ok"]
    assert [g.findtext(f"{SVG}title") for g in columns][1] == (
        "2024-01-03: mean score 0.9500 over 3 symbols"
    )
    heights = [
        {r.get("class"): float(r.get("height", "nan")) for r in g.iter(f"{SVG}rect")}
        for g in columns
    ]
    assert heights[0]["qgap"] == 0 and heights[1]["qgap"] > heights[2]["qgap"] > 0
    whole = {round(h["qbar"] + h["qgap"], 1) for h in heights}
    assert len(whole) == 1  # score + shortfall: every column is as tall as 1.0


# -- the whole page in headless Chromium -----------------------------------------------------
BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _unavailable(reason: str) -> None:
    if services_required():
        pytest.fail(f"{reason}; QV_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
    pytest.skip(f"{reason}; install it (.ci/run does) or set QV_REQUIRE_SERVICES=1 to fail")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Return the system Chromium (Debian's chromium-headless-shell or chromium)."""
    for name in ("chromium-headless-shell", "chromium"):
        found = shutil.which(name)
        if found:
            return found
    _unavailable("no Chromium found (apt-get install chromium-headless-shell)")
    raise AssertionError("unreachable")


@pytest.mark.slow
def test_the_page_in_headless_chromium(
    page_api: LiveApi, page_store: PageStore, acme: Credentials, chromium: str, tmp_path: Path
) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # a dev dependency; missing only outside `make install`
        _unavailable(f"Playwright is not installed ({exc})")
    expected = _expected_bars(page_store.settings, "none")
    problems: list[str] = []
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        timings["launch"] = time.perf_counter() - started
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)  # fmt: skip
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
            page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
                    if r.status >= 400 else None)  # fmt: skip

            mark = time.perf_counter()
            page.goto(page_api.url + CHART)
            assert page.url.startswith(page_api.url + "/login?next=")
            page.fill("#client_id", acme.client_id)
            page.fill("#client_secret", acme.client_secret)
            page.click("button[type=submit]")
            page.wait_for_url(page_api.url + CHART)
            timings["sign_in_and_page"] = time.perf_counter() - mark

            candles = page.locator("svg.candles g.candle")
            assert candles.count() == expected.height
            assert page.locator("svg.quality g.qday").count() > 0
            assert page.locator(".split-label").text_content() == SPLIT_LABEL
            raw = candles.locator("title").all_text_contents()
            page.screenshot(path=tmp_path / "status-raw.png", full_page=True)

            mark = time.perf_counter()
            page.get_by_role("link", name="Adjusted").click()
            page.wait_for_url(re.compile(r".*adjust=all.*"))
            timings["toggle"] = time.perf_counter() - mark
            assert page.get_by_role("link", name="Adjusted").get_attribute("aria-current")
            adjusted = page.locator("svg.candles g.candle title").all_text_contents()
            page.screenshot(path=tmp_path / "status-adjusted.png", full_page=True)
        finally:
            browser.close()
    timings["total"] = time.perf_counter() - started

    assert problems == []
    assert len(raw) == len(adjusted) == expected.height
    days = [date.fromisoformat(t.split()[0]) for t in raw]
    before = [i for i, d in enumerate(days) if d < SPLIT_DAY]
    after = [i for i, d in enumerate(days) if d >= SPLIT_DAY]
    assert before and after
    assert all(raw[i] != adjusted[i] for i in before)  # split (and dividends) adjust the past
    closes = [
        float(re.findall(r"C ([0-9.]+)", t)[0]) for t in (raw[before[0]], adjusted[before[0]])
    ]
    assert closes[1] < closes[0] / (SPLIT_RATIO * 0.95)  # the split divides earlier prices
    assert (tmp_path / "status-raw.png").stat().st_size > 10_000
    print(f"browser timings (s): {', '.join(f'{k} {v:.2f}' for k, v in timings.items())}")
