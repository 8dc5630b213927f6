"""The REST API over a real socket: auth, bars in every format, caching, errors, tenants."""

from __future__ import annotations

import io
import ssl
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import polars as pl
import pyarrow as pa
import pytest

from api.conftest import SYMBOLS, Credentials, LiveApi, bearer, live_api, make_client
from quantivista.clock import TestClock
from quantivista.config import ApiSettings, Settings
from quantivista.platform import Platform


@pytest.fixture(scope="module")
def reader(store: Settings) -> Credentials:
    return make_client(store, "acme", "read:bars,read:reference")


def test_probes_and_metrics_answer_without_credentials(api: LiveApi) -> None:
    with api.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"status": "ready"}
        http.get("/api/v1/bars", params={"symbols": SYMBOLS[0]})
        metrics = http.get("/metrics").text
    assert 'qv_api_requests_total{route="/api/v1/bars",status="401"}' in metrics
    assert "qv_api_request_seconds_bucket" in metrics


def test_no_credentials_is_401_and_a_wrong_scope_is_403(
    api: LiveApi, store: Settings, reader: Credentials
) -> None:
    with api.client() as http:
        bare = http.get("/api/v1/bars", params={"symbols": SYMBOLS[0]})
        assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
        assert bare.headers["content-type"] == "application/problem+json"
        wrong = http.post("/api/v1/auth/token", data={"grant_type": "client_credentials",
                          "client_id": reader.client_id, "client_secret": "nope"})  # fmt: skip
        assert wrong.status_code == 401
        submit = http.post("/api/v1/jobs", headers=bearer(api, reader), json={
            "symbols": ["X"], "start": "2024-01-01", "end": "2024-01-31"})  # fmt: skip
        assert submit.status_code == 403 and "write:ingest" in submit.json()["detail"]
        over = http.post("/api/v1/auth/token", data={"grant_type": "client_credentials",
                         "client_id": reader.client_id, "client_secret": reader.client_secret,
                         "scope": "admin"})  # fmt: skip
        assert over.status_code == 403


def test_a_token_carries_the_claims_and_expires(store: Settings, reader: Credentials) -> None:
    clock = TestClock(datetime(2026, 11, 23, 15, 0, tzinfo=UTC))
    with Platform.from_settings(store, clock=clock) as p:
        issued = p.runtime.auth.token(reader.client_id, reader.client_secret)
        claims = jwt.decode(issued.access_token, options={"verify_signature": False})
        assert {"sub", "tenant", "scope", "exp", "iat", "jti"} <= set(claims)
        assert claims["tenant"] == "acme" and claims["sub"] == reader.client_id
        assert p.runtime.auth.from_token(issued.access_token).tenant == "acme"
        clock.advance(issued.expires_in + 1)
        with pytest.raises(Exception, match="expired"):
            p.runtime.auth.from_token(issued.access_token)


def test_bars_as_json_pages_through_with_cursors(api: LiveApi, reader: Credentials) -> None:
    params: dict[str, str | int] = {"symbols": ",".join(SYMBOLS[:2]), "start": "2024-01-01",
                                    "end": "2024-06-30", "limit": 50}  # fmt: skip
    rows: list[dict[str, object]] = []
    with api.client(headers=bearer(api, reader)) as http:
        while True:
            reply = http.get("/api/v1/bars", params=params)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            rows.extend(body["bars"])
            if body["next_page_token"] is None:
                break
            params["page_token"] = body["next_page_token"]
    whole = pl.DataFrame(rows)
    assert (
        whole.height == 2 * 124 and whole.select(pl.struct("symbol", "ts").is_unique().all()).item()
    )
    assert sorted(whole["symbol"].unique().to_list()) == sorted(SYMBOLS[:2])


def _in_storage_order(table: pl.DataFrame) -> pl.DataFrame:
    """Check a plain bulk Arrow stream's order (each symbol's bars together, by ts; symbols
    bucket by bucket) and return it sorted by symbol and ts, as the other formats are."""
    runs = table.select(pl.col("symbol").cast(pl.String).rle_id())["symbol"]
    assert runs.n_unique() == table["symbol"].n_unique()  # one run per symbol
    assert table.select((pl.col("ts").diff().over("symbol") > 0).all()).item() in (True, None)
    return table.sort("symbol", "ts", maintain_order=True)


def test_bulk_formats_hold_the_same_bars(api: LiveApi, reader: Credentials) -> None:
    base = {"symbols": ",".join(SYMBOLS), "start": "2023-01-01", "end": "2024-12-31"}
    with api.client(headers=bearer(api, reader)) as http:
        arrow = http.get("/api/v1/bars", params={**base, "format": "arrow"})
        again = http.get("/api/v1/bars", params={**base, "format": "arrow"})  # from the cache
        parquet = http.get("/api/v1/bars", params={**base, "format": "parquet"})
        csv = http.get("/api/v1/bars", params={**base, "format": "csv"})
    assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pl.from_arrow(pa.ipc.open_stream(arrow.content).read_all())
    assert isinstance(table, pl.DataFrame)
    from_parquet = pl.read_parquet(io.BytesIO(parquet.content))
    from_csv = pl.read_csv(io.StringIO(csv.text))
    assert table.height == from_parquet.height == from_csv.height == 3 * 502
    assert _in_storage_order(table).equals(from_parquet)
    assert again.content == arrow.content and again.headers["x-total-count"] == str(3 * 502)
    for reply in (arrow, again):  # the first too: a small body is read whole, then sent
        assert reply.headers["content-length"] == str(len(arrow.content))
        assert "transfer-encoding" not in reply.headers
    assert arrow.headers["x-total-count"] == str(3 * 502)
    assert table.schema["ts"] == pl.Datetime("us", "UTC")


def test_cached_answers_keep_x_total_count(api: LiveApi, reader: Credentials) -> None:
    params = {"symbols": SYMBOLS[1], "start": "2023-02-01", "end": "2023-05-31"}
    with api.client(headers=bearer(api, reader)) as http:
        first, cached = (
            http.get("/api/v1/bars", params=params),
            http.get("/api/v1/bars", params=params),
        )
    total = len(first.json()["bars"])
    assert total > 50 and first.headers["x-total-count"] == str(total)
    assert cached.content == first.content and cached.headers["x-total-count"] == str(total)


def test_settled_history_has_an_etag_and_304s(api: LiveApi, reader: Credentials) -> None:
    params = {"symbols": SYMBOLS[0], "start": "2024-01-01", "end": "2024-03-31"}
    with api.client(headers=bearer(api, reader)) as http:
        first = http.get("/api/v1/bars", params=params)
        etag = first.headers["etag"]
        assert "max-age" in first.headers["cache-control"]
        again = http.get("/api/v1/bars", params=params, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        metrics = http.get("/metrics").text
    assert 'qv_api_cache_total{outcome="hit_l1"}' in metrics


def test_cached_answers_are_counted_exactly_by_the_next_scrape(
    store: Settings, reader: Credentials
) -> None:
    def count(metrics: str, sample: str) -> float:
        line = next((x for x in metrics.splitlines() if x.startswith(sample)), f"{sample} 0")
        return float(line.rsplit(" ", 1)[1])

    ok = 'qv_api_requests_total{route="/api/v1/bars",status="200"}'
    hits = 'qv_api_cache_total{outcome="hit_l1"}'
    params = {"symbols": SYMBOLS[1], "start": "2024-02-01", "end": "2024-02-29"}
    with live_api(store) as running, running.client(headers=bearer(running, reader)) as http:
        before = http.get("/metrics").text
        replies = [http.get("/api/v1/bars", params=params) for _ in range(7)]
        assert {r.status_code for r in replies} == {200}
        left = [int(r.headers["x-ratelimit-remaining"]) for r in replies]
        assert left == sorted(left, reverse=True) and left[0] > left[-1]
        after = http.get("/metrics").text
    # counted in batches by the fast path, and all of them by the time anyone reads
    assert count(after, ok) - count(before, ok) == 7
    assert count(after, hits) - count(before, hits) == 6  # the first one filled the cache
    assert count(after, 'qv_api_request_seconds_count{route="/api/v1/bars"}') == count(after, ok)


def test_a_write_invalidates_cached_responses(store: Settings, tmp_path: object) -> None:
    settings = Settings(data_dir=store.data_dir)
    creds = make_client(settings, "acme", "read:bars")
    with live_api(settings) as running, running.client(headers=bearer(running, creds)) as http:
        params = {"symbols": SYMBOLS[2], "start": "2023-01-03", "end": "2023-01-05"}
        before = http.get("/api/v1/bars", params=params).json()["bars"]
        with Platform.from_settings(settings) as p:  # another process writes a correction
            bars = p.bars(SYMBOLS[2], "2023-01-03", "2023-01-03")
            p.write_bars(bars.with_columns(volume=pl.col("volume") + 1).drop("ingested_at"),
                         source="fix")  # fmt: skip
        time.sleep(0.6)  # the epoch is read at most every half second
        after = http.get("/api/v1/bars", params=params).json()["bars"]
    assert after[0]["volume"] == before[0]["volume"] + 1


def test_bad_parameters_are_422_problems_naming_the_parameter(
    api: LiveApi, reader: Credentials
) -> None:
    with api.client(headers=bearer(api, reader)) as http:
        cases = {
            "adjust": {"symbols": "A", "adjust": "dividends"},
            "start": {"symbols": "A", "start": "not-a-date"},
            "page_token": {"symbols": "A", "page_token": "garbage"},
            "limit": {"symbols": "A", "limit": "-1"},
        }
        for name, params in cases.items():
            reply = http.get("/api/v1/bars", params=params)
            assert reply.status_code == 422, reply.text
            assert name in reply.json()["detail"], reply.json()
        backwards = http.get("/api/v1/bars", params={"symbols": "A", "start": "2024-06-01",
                                                     "end": "2024-01-01"})  # fmt: skip
        assert backwards.status_code == 422 and "end is before start" in backwards.text
        missing = http.get(f"/api/v1/bars/{SYMBOLS[0]}/latest", params={"timeframe": "1m"})
        assert missing.status_code == 404


def test_latest_actions_reference_and_status(api: LiveApi, reader: Credentials) -> None:
    with api.client(headers=bearer(api, reader)) as http:
        latest = http.get(f"/api/v1/bars/{SYMBOLS[0]}/latest").json()
        assert latest["symbol"] == SYMBOLS[0] and latest["ts"].startswith("2024-12-31")
        assert http.get("/api/v1/actions", params={"symbols": ",".join(SYMBOLS)}).status_code == 200
        sessions = http.get("/api/v1/calendars/XNYS/sessions",
                            params={"start": "2024-12-23", "end": "2024-12-31"}).json()  # fmt: skip
        assert len(sessions) == 6  # Christmas is closed
        status = http.get("/api/v1/status").json()
        assert status["timeframes"][0]["rows"] == 3 * 502
        assert http.get("/api/v1/providers").json()["providers"]


def test_tenants_see_their_own_jobs_only(api: LiveApi, store: Settings) -> None:
    acme = make_client(store, "acme", "read:bars,write:ingest")
    other = make_client(store, "globex", "read:bars,write:ingest")
    with api.client(headers=bearer(api, acme)) as http:
        submitted = http.post("/api/v1/jobs", json={"symbols": [SYMBOLS[0]],
                              "start": "2022-01-01", "end": "2022-01-31"})  # fmt: skip
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        deadline = time.monotonic() + 30
        while http.get(f"/api/v1/jobs/{job_id}").json()["status"] in ("pending", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert http.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded"
        assert http.get(f"/api/v1/quality/jobs/{job_id}").json()["total_records"] == 20
    with api.client(headers=bearer(api, other)) as http:
        assert http.get(f"/api/v1/jobs/{job_id}").status_code == 404
        assert http.get(f"/api/v1/quality/jobs/{job_id}").status_code == 404
        assert http.get("/api/v1/quarantine", params={"job_id": job_id}).status_code == 404
        assert job_id not in {j["job_id"] for j in http.get("/api/v1/jobs").json()}


def test_entitlements_limit_symbols_and_timeframes(api: LiveApi, store: Settings) -> None:
    creds = make_client(store, "narrow", "read:bars")
    with Platform.from_settings(store) as p:
        p.runtime.auth.set_tenant("narrow", symbols=[SYMBOLS[0]], timeframes=["1d"])
    with api.client(headers=bearer(api, creds)) as http:
        assert http.get("/api/v1/bars", params={"symbols": SYMBOLS[0]}).status_code == 200
        denied = http.get("/api/v1/bars", params={"symbols": ",".join(SYMBOLS[:2])})
        assert denied.status_code == 403 and SYMBOLS[1] in denied.json()["detail"]
        minute = http.get("/api/v1/bars", params={"symbols": SYMBOLS[0], "timeframe": "1m"})
        assert minute.status_code == 403


def test_api_keys_work_and_revocation_stops_key_and_tokens(api: LiveApi, store: Settings) -> None:
    creds = make_client(store, "acme", "read:bars")
    headers = bearer(api, creds)
    key = {"X-API-Key": creds.api_key}
    settled = {"symbols": SYMBOLS[2], "start": "2023-04-01", "end": "2023-04-30"}
    with api.client() as http:
        assert http.get("/api/v1/status", headers=key).status_code == 200
        assert http.get("/api/v1/status", headers=headers).status_code == 200
        for _ in range(2):  # the second from the cache, ahead of the routes (the fast path)
            assert http.get("/api/v1/bars", params=settled, headers=key).status_code == 200
        with Platform.from_settings(store) as p:
            p.runtime.auth.revoke(creds.client_id)
        time.sleep(5.1)  # a revocation reaches every API process within five seconds
        assert http.get("/api/v1/status", headers=key).status_code == 401
        assert http.get("/api/v1/status", headers=headers).status_code == 401
        assert http.get("/api/v1/bars", params=settled, headers=key).status_code == 401


def test_rate_limits_answer_429_with_retry_after(store: Settings) -> None:
    settings = store.model_copy(update={"api": ApiSettings(rate_limits=["3/minute"])})
    creds = make_client(settings, "acme", "read:bars")
    with (
        live_api(settings) as running,
        running.client(headers={"X-API-Key": creds.api_key}) as http,
    ):
        replies = [http.get("/api/v1/status") for _ in range(4)]
    assert [r.status_code for r in replies] == [200, 200, 200, 429]
    assert replies[0].headers["x-ratelimit-limit"] == "3"
    assert replies[2].headers["x-ratelimit-remaining"] == "0"
    assert int(replies[3].headers["retry-after"]) >= 1


def test_tls_with_a_generated_certificate(store: Settings, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with live_api(store, ssl_certfile=str(cert), ssl_keyfile=str(key)) as running:
        assert running.url.startswith("https://")
        with running.client(verify=ssl.create_default_context(cafile=str(cert))) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
        with running.client() as untrusting, pytest.raises(httpx.ConnectError):
            untrusting.get("/healthz")  # the system trust store does not know this cert


@pytest.mark.redis
def test_two_api_processes_share_limits_and_cache_through_redis(
    shared_limits: Callable[[list[str]], Settings],
) -> None:
    settings = shared_limits(["4/minute"])
    creds = make_client(settings, "acme", "read:bars")
    key = {"X-API-Key": creds.api_key}
    params = {"symbols": SYMBOLS[0], "start": "2023-01-01", "end": "2023-03-31"}
    with (
        live_api(settings) as one,
        live_api(settings) as two,
        one.client(headers=key) as a,
        two.client(headers=key) as b,
    ):
        replies = [a.get("/api/v1/bars", params=params), b.get("/api/v1/bars", params=params),
                   a.get("/api/v1/bars", params=params), b.get("/api/v1/bars", params=params),
                   a.get("/api/v1/bars", params=params)]  # fmt: skip
        metrics = b.get("/metrics").text
    assert [r.status_code for r in replies] == [200, 200, 200, 200, 429]  # one shared quota
    assert replies[1].content == replies[0].content
    assert 'qv_api_cache_total{outcome="hit_l2"}' in metrics  # the second found the first's


def test_a_bulk_arrow_read_in_symbol_groups_is_the_whole_read(
    api: LiveApi, reader: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantivista.api.routes import market

    monkeypatch.setattr(market, "_PIECE_SYMBOLS", 1)  # 3 symbols + one without bars: 4 groups
    monkeypatch.setattr(market, "_KNOWN_LENGTH_BYTES", 0)  # streamed, chunked, as it is read
    names = [*SYMBOLS, "NOBARS"]
    # adjusted: not a plain read as stored, so read in sorted symbol groups
    base = {"symbols": ",".join(reversed(names)), "start": "2023-06-01", "end": "2024-06-30",
            "adjust": "splits"}  # fmt: skip
    with api.client(headers=bearer(api, reader)) as http:
        whole = http.get("/api/v1/bars", params={**base, "format": "parquet"})
        first = http.get("/api/v1/bars", params={**base, "format": "arrow"})
        again = http.get("/api/v1/bars", params={**base, "format": "arrow"})
    expected = pl.read_parquet(io.BytesIO(whole.content))
    assert expected.height > 3 * 200 and expected["symbol"].n_unique() == 3
    for reply in (first, again):
        assert reply.status_code == 200
        table = pl.from_arrow(pa.ipc.open_stream(reply.content).read_all())
        assert isinstance(table, pl.DataFrame)
        assert table.equals(expected)  # sorted by symbol and ts, like the other formats
    assert "x-total-count" not in first.headers  # a streamed body's total comes at its end
    assert first.headers["transfer-encoding"] == "chunked"
    assert again.headers["x-total-count"] == str(expected.height)  # the cache knows it
    assert first.content == again.content  # the repeat is the cached stream, byte for byte


def test_a_plain_bulk_arrow_read_over_the_known_length_streams_as_it_is_read(
    api: LiveApi, reader: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantivista.api.routes import market

    base = {"symbols": ",".join(SYMBOLS), "start": "2023-03-01", "end": "2024-09-30"}
    with api.client(headers=bearer(api, reader)) as http:
        other_key = {**base, "symbols": ",".join(reversed(SYMBOLS)), "format": "arrow"}
        known = http.get("/api/v1/bars", params=other_key)  # the same bars, another cache key
        monkeypatch.setattr(market, "_KNOWN_LENGTH_BYTES", 0)  # past it after one table
        first = http.get("/api/v1/bars", params={**base, "format": "arrow"})
        again = http.get("/api/v1/bars", params={**base, "format": "arrow"})
    assert known.headers["content-length"] == str(len(known.content))  # measured, then sent
    assert first.headers["transfer-encoding"] == "chunked"
    assert "x-total-count" not in first.headers
    table = pl.from_arrow(pa.ipc.open_stream(first.content).read_all())
    assert isinstance(table, pl.DataFrame)
    expected = pl.from_arrow(pa.ipc.open_stream(known.content).read_all())
    assert isinstance(expected, pl.DataFrame)
    assert table.equals(expected)  # the same stream, chunked
    assert table["symbol"].n_unique() == 3
    assert again.content == first.content  # the cached stream, byte for byte
    assert again.headers["x-total-count"] == str(table.height)


def test_a_new_keys_proof_runs_off_the_event_loop(
    api: LiveApi, store: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantivista.services import auth

    creds = make_client(store, "acme", "read:bars")
    real = auth._matches

    def slow(secret: str, stored: str) -> bool:  # a slow hash, as scrypt is on a busy host
        time.sleep(1.0)
        return real(secret, stored)

    monkeypatch.setattr(auth, "_matches", slow)
    params = {"symbols": SYMBOLS[0], "start": "2023-01-01", "end": "2023-01-31"}
    with ThreadPoolExecutor(1) as pool, api.client() as http:
        keyed = pool.submit(http.get, "/api/v1/bars", params=params,
                            headers={"X-API-Key": creds.api_key})  # fmt: skip
        time.sleep(0.2)  # the proof is under way
        started = time.perf_counter()
        assert http.get("/healthz").status_code == 200
        probe = time.perf_counter() - started
        assert keyed.result().status_code == 200
    assert probe < 0.6  # answered while the key was being proven


def test_intraday_bars_are_the_regular_session_unless_extended_is_asked(
    tmp_path: Path,
) -> None:
    from quantivista.providers import polygon

    fixture = Path(__file__).parents[1] / "fixtures" / "intraday"
    body = (fixture / "polygon_aggs_QVX_1minute_extended.json").read_bytes()
    minutes = polygon.parse_aggs(body, "QVX", "1m")[0]
    settings = Settings(data_dir=tmp_path / "qv")
    with Platform.from_settings(settings) as p:
        p.write_bars(minutes.drop("ingested_at", "job_id"), source="polygon")
    creds = make_client(settings, "acme", "read:bars")
    params = {"symbols": "QVX", "timeframe": "1m", "start": "2020-08-28", "end": "2020-08-28",
              "format": "csv"}  # fmt: skip
    with live_api(settings) as running, running.client(headers=bearer(running, creds)) as http:
        regular = pl.read_csv(io.StringIO(http.get("/api/v1/bars", params=params).text))
        extended = pl.read_csv(
            io.StringIO(http.get("/api/v1/bars", params={**params, "session": "extended"}).text)
        )
        bogus = http.get("/api/v1/bars", params={**params, "session": "overnight"})
    assert regular.height == 390
    assert extended.height > 390
    assert (
        regular["ts"].to_list()
        == extended.filter((pl.col("quality_flags") & (1 << 15)) == 0)["ts"].to_list()
    )
    assert bogus.status_code == 422 and "session" in bogus.text


def test_with_workers_enabled_a_posted_job_is_queued_for_a_worker(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "qv", workers={"enabled": True, "poll_s": 0.05})
    creds = make_client(settings, "acme", "read:bars,write:ingest")
    with live_api(settings) as api, api.client(headers=bearer(api, creds)) as http:
        body = {"symbols": SYMBOLS[:2], "start": "2022-01-03", "end": "2022-01-31"}
        submitted = http.post("/api/v1/jobs", json=body)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        assert submitted.json()["queue"] == "default"
        time.sleep(0.5)
        assert http.get(f"/api/v1/jobs/{job_id}").json()["status"] == "pending"  # not run here
        with api.client() as browser:  # the status page shows the queued job's task progress
            form = {"client_id": creds.client_id, "client_secret": creds.client_secret}
            assert browser.post("/login", data=form).status_code == 303
            page = browser.get("/").text
            row = page[page.index(job_id) :].split("</tr>")[0]
            assert ">0/1<" in row and "pending" in row
        with Platform.from_settings(settings) as p:
            worker = p.runtime.worker(probe_port=0).start()
            try:
                done = p.runtime.ingestion.wait(job_id, timeout_s=30, poll_s=0.05)
            finally:
                worker.stop()
                worker.wait()
        assert done.status.value == "succeeded"
        seen = http.get(f"/api/v1/jobs/{job_id}").json()
        assert seen["status"] == "succeeded" and seen["records_processed"] == 2 * 20
