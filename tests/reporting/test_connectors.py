"""Connectors over real sockets: S3 (a local moto server), PostgreSQL, a paginated HTTP API;
and every file format decoding to the same records."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse
from uuid import uuid4

import polars as pl
import psycopg
import pytest
from polars.testing import assert_frame_equal

from quantivista.acquisition.breaker import Breakers, BreakerState
from quantivista.acquisition.limits import RateLimiter, RedisBackend
from quantivista.clock import TestClock
from quantivista.errors import (
    CircuitOpenError,
    InvalidInputError,
    ProviderError,
    TransientProviderError,
)
from quantivista.model.workflow import DataFormat
from quantivista.reporting.connectors import decode, read_files, read_http, read_postgres
from quantivista.reporting.simulate import EXTENSIONS, write_frame

FRAME = pl.DataFrame({"id": [1, 2, 3], "name": ["a", "b", None], "px": [1.5, -2.0, 3.25]})


@pytest.mark.parametrize("fmt", list(DataFormat))
def test_every_format_round_trips_the_same_records(tmp_path: Path, fmt: DataFormat) -> None:
    path = tmp_path / f"x.{EXTENSIONS[fmt]}"
    write_frame(FRAME, path, fmt)
    (batch,) = read_files(str(path), fmt)
    assert batch.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    got = batch.frame
    if fmt is DataFormat.CSV:  # CSV columns are text until a cast rule types them
        got = got.with_columns(pl.col("id").cast(pl.Int64), pl.col("px").cast(pl.Float64))
    if fmt is DataFormat.PROTOBUF:  # Struct numbers are doubles
        got = got.with_columns(pl.col("id").cast(pl.Int64))
    assert_frame_equal(got.select(FRAME.columns), FRAME)
    assert batch.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert batch.input_uri.endswith(f"x.{EXTENSIONS[fmt]}")


@pytest.mark.parametrize("fmt", list(DataFormat))
def test_malformed_input_is_a_typed_error(fmt: DataFormat) -> None:
    garbage = b"\x00\xff{not: [valid" if fmt is not DataFormat.CSV else b'a,b\n"1,2\n'
    with pytest.raises(InvalidInputError, match=f"cannot read the input as {fmt.value}"):
        decode(garbage, fmt)


def test_files_are_read_from_s3_by_glob_with_checksums(s3_endpoint: str, tmp_path: Path) -> None:
    import s3fs

    options: dict[str, Any] = {
        "key": "test", "secret": "test", "client_kwargs": {"endpoint_url": s3_endpoint,
                                                           "region_name": "us-east-1"},
    }  # fmt: skip
    import boto3

    bucket = f"qv-{uuid4().hex[:8]}"
    boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)  # fmt: skip
    fs = s3fs.S3FileSystem(**options)
    local = tmp_path / "a.parquet"
    FRAME.write_parquet(local)
    fs.put(str(local), f"{bucket}/in/day1.parquet")
    fs.put(str(local), f"{bucket}/in/day2.parquet")
    batches = list(
        read_files(f"s3://{bucket}/in/*.parquet", DataFormat.PARQUET, {"storage_options": options})
    )
    assert [b.input_uri for b in batches] == [
        f"s3://{bucket}/in/day1.parquet", f"s3://{bucket}/in/day2.parquet",
    ]  # fmt: skip
    assert {b.sha256 for b in batches} == {hashlib.sha256(local.read_bytes()).hexdigest()}
    assert_frame_equal(batches[1].frame, FRAME)


@pytest.fixture
def pg_table(postgres_dsn: str) -> Iterator[str]:
    schema = f"qv_wf_{uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".trades (id int8, symbol text, qty float8)')
    yield f"{schema}.trades"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_postgres_incremental_sync_resumes_after_its_cursor(
    postgres_dsn: str, pg_table: str
) -> None:
    schema, table = pg_table.split(".")

    def insert(ids: range) -> None:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany(
                f'INSERT INTO "{schema}".{table} VALUES (%s, %s, %s)',
                [(i, f"S{i}", float(i)) for i in ids],
            )

    insert(range(1, 8))
    config = {"table": pg_table, "cursor_column": "id", "batch_rows": 3}
    first = list(read_postgres(postgres_dsn, config, None))
    assert [b.frame["id"].to_list() for b in first] == [[1, 2, 3], [4, 5, 6], [7]]
    cursor = first[-1].cursor
    assert cursor == {"column": "id", "after": 6, "value": 7}
    insert(range(8, 10))
    again = list(read_postgres(postgres_dsn, config, cursor))
    assert [b.frame["id"].to_list() for b in again] == [[8, 9]]
    assert list(read_postgres(postgres_dsn, config, again[-1].cursor)) == []
    with pytest.raises(ProviderError):
        list(read_postgres(postgres_dsn, {"table": "no.such", "cursor_column": "id"}, None))


class _Api(BaseHTTPRequestHandler):
    rows: ClassVar[list[dict[str, Any]]] = [{"id": i, "v": i * 10} for i in range(7)]
    seen_auth: ClassVar[list[str | None]] = []
    hits: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        _Api.seen_auth.append(self.headers.get("Authorization"))
        _Api.hits.append(url.path)
        if url.path == "/broken":
            self.send_response(503)
            self.end_headers()
            return
        page = int(query.get("page", ["1"])[0])
        items = self.rows[(page - 1) * 3 : page * 3]
        body: dict[str, Any] = {"data": items}
        if url.path == "/linked" and page * 3 < len(self.rows):
            body["next"] = f"http://{self.headers['Host']}/linked?page={page + 1}"
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("style", ["linked", "numbered"])
def test_http_pages_are_followed_to_the_end(api: str, style: str) -> None:
    config: dict[str, Any] = {"headers": {"Authorization": "Bearer t0k"}}
    if style == "numbered":
        config["page_param"] = "page"
    batches = list(read_http(f"{api}/{style}", config))
    assert [b.frame["id"].to_list() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [b.offset_start for b in batches] == [0, 3, 6]
    assert _Api.seen_auth[-1] == "Bearer t0k"
    with pytest.raises(ProviderError) as caught:
        list(read_http(f"{api}/broken", {}))
    assert caught.value.status_code == 503


def test_http_pages_wait_for_the_shared_rate_limiter(api: str, redis_url: str) -> None:
    clock = TestClock()
    prefix = f"qv:test:{uuid4().hex}"
    # two limiters on one Redis: the windows are the platform's, shared by every process
    first, second = (
        RateLimiter({}, clock=clock, backend=RedisBackend(redis_url, prefix=prefix))
        for _ in range(2)
    )
    config = {"page_param": "page", "provider": "reports-api", "rate_limits": ["2/minute"]}
    started = clock.monotonic()
    assert len(list(read_http(f"{api}/numbered", config, limiter=first))) == 3
    # 3 pages plus the empty one that ends the loop: 4 calls at 2 a minute
    assert clock.monotonic() - started >= 60
    second.set_limits("reports-api", ["2/minute"])
    assert [u.used for u in second.usage("reports-api")] == [2]
    first.close()
    second.close()


def test_a_failing_http_source_opens_its_breaker_and_is_then_not_called(api: str) -> None:
    breakers = Breakers(TestClock(), failure_threshold=2, call_timeout_s=None)
    config = {"provider": "flaky-api"}
    for _ in range(2):
        with pytest.raises(TransientProviderError):
            list(read_http(f"{api}/broken", config, breakers=breakers))
    assert breakers.get("flaky-api").state is BreakerState.OPEN
    calls = _Api.hits.count("/broken")
    with pytest.raises(CircuitOpenError):
        list(read_http(f"{api}/broken", config, breakers=breakers))
    assert _Api.hits.count("/broken") == calls  # refused without a request
    # another source (another provider name) is not affected
    assert len(list(read_http(f"{api}/linked", {}, breakers=breakers))) == 3
