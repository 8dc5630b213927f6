"""Connectors: read a source's records into frames, each batch with where it came from.

- files (`file://`, a path, `s3://`, any fsspec URL; a glob matches many): CSV,
  JSON (an array) or NDJSON, Parquet, Avro (fastavro), Protobuf (length-delimited
  `google.protobuf.Struct` messages); each file's sha256 is its lineage;
- a PostgreSQL table read incrementally by a cursor column (INCREMENTAL_SYNC): rows after
  the last cursor, in cursor order; the new cursor is kept only once the job committed;
- an HTTP JSON API with pagination (a `next` URL in the body, or a page number).

`connection_config` keys: `storage_options` (fsspec, e.g. `{"endpoint_url": ...}` for S3),
`csv` (Polars `read_csv` options; by default every CSV column is text, typed by cast
rules); `table`, `cursor_column`, `batch_rows` (PostgreSQL);
`headers`, `params`, `items_key`, `next_key`, `page_param`, `max_pages`, `provider`,
`rate_limits` (HTTP).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec  # type: ignore[import-untyped]
import httpx
import polars as pl

from quantivista.errors import (
    InvalidInputError,
    NotFoundError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from quantivista.model.workflow import DataFormat

if TYPE_CHECKING:
    from quantivista.acquisition.breaker import Breakers
    from quantivista.acquisition.limits import RateLimiter

__all__ = [
    "Batch",
    "decode",
    "encode_protobuf",
    "read_files",
    "read_http",
    "read_postgres",
]

_CHUNK = 8 << 20
_TIMEOUT_S = 30.0


@dataclass
class Batch:
    """Records read from one input, with its lineage."""

    frame: pl.DataFrame
    input_uri: str
    sha256: str | None = None
    offset_start: int = 0
    cursor: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _varint(value: int) -> bytes:
    """The protobuf base-128 varint of a message length (the public API has none)."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Return (value, next position) of the varint at `pos`."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated protobuf length prefix")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def encode_protobuf(records: list[dict[str, Any]]) -> bytes:
    """Return records as length-delimited `google.protobuf.Struct` messages."""
    from google.protobuf import struct_pb2

    out = io.BytesIO()
    for record in records:
        message = struct_pb2.Struct()
        message.update(record)
        body = message.SerializeToString()
        out.write(_varint(len(body)))
        out.write(body)
    return out.getvalue()


def _decode_protobuf(data: bytes) -> pl.DataFrame:
    from google.protobuf import json_format, struct_pb2

    rows = []
    pos = 0
    while pos < len(data):  # one message per record: the wire format is per record
        size, pos = _read_varint(data, pos)
        message = struct_pb2.Struct()
        message.ParseFromString(data[pos : pos + size])
        pos += size
        rows.append(json_format.MessageToDict(message))
    return pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()


def decode(
    data: bytes | str, fmt: DataFormat, options: Mapping[str, Any] | None = None
) -> pl.DataFrame:
    """Return the records of one input's bytes (or a local CSV or Parquet file's path);
    `InvalidInputError` when they do not parse."""
    options = options or {}
    try:
        if fmt is DataFormat.CSV:
            # text columns: one bad value must cost its row (a cast rule rejects it), not the file
            csv: dict[str, Any] = {"infer_schema": False} | dict(options.get("csv", {}))
            return pl.read_csv(data, **csv)
        if fmt is DataFormat.PARQUET:
            return pl.read_parquet(data)
        if isinstance(data, str):
            data = Path(data).read_bytes()
        if fmt is DataFormat.JSON:
            head = data.lstrip()[:1]
            if head == b"[":
                return pl.from_dicts(json.loads(data), infer_schema_length=None)
            return pl.read_ndjson(data) if data.strip() else pl.DataFrame()
        if fmt is DataFormat.AVRO:
            import fastavro

            records: list[Any] = list(fastavro.reader(io.BytesIO(data)))
            return pl.from_dicts(records, infer_schema_length=None) if records else pl.DataFrame()
        return _decode_protobuf(data)
    except InvalidInputError:
        raise
    except Exception as exc:  # every parser has its own errors; all mean "malformed input"
        raise InvalidInputError(f"cannot read the input as {fmt.value}: {exc}") from exc


def read_files(
    location: str, fmt: DataFormat, config: Mapping[str, Any] | None = None
) -> Iterator[Batch]:
    """Yield one batch per file matching `location` (an fsspec URL or glob), in name order."""
    config = config or {}
    fs, _, paths = fsspec.get_fs_token_paths(
        location, storage_options=config.get("storage_options")
    )
    if not paths:
        raise NotFoundError("no input file matches the source's location", location=location)
    local = "file" in fs.protocol if isinstance(fs.protocol, tuple) else fs.protocol == "file"
    for path in sorted(paths):
        uri = fs.unstrip_protocol(path)
        if local and fmt in (DataFormat.CSV, DataFormat.PARQUET):
            # Polars maps the file and parses it on every core while a thread hashes it
            with ThreadPoolExecutor(max_workers=1) as pool:
                digest = pool.submit(_sha256, fs, path)
                frame = decode(path, fmt, config)
                yield Batch(frame, uri, sha256=digest.result())
            continue
        hasher = hashlib.sha256()
        buffer = io.BytesIO()
        with fs.open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
                buffer.write(chunk)
        frame = decode(buffer.getvalue(), fmt, config)
        yield Batch(frame, uri, sha256=hasher.hexdigest())


def _sha256(fs: Any, path: str) -> str:
    hasher = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)  # hashlib lets go of the GIL on large chunks
    return hasher.hexdigest()


def read_postgres(
    dsn: str, config: Mapping[str, Any], cursor: Mapping[str, Any] | None
) -> Iterator[Batch]:
    """Yield rows of `config['table']` after the last cursor, `batch_rows` at a time."""
    import psycopg
    from psycopg import sql

    table, column = config.get("table"), config.get("cursor_column")
    if not table or not column:
        raise InvalidInputError("an incremental PostgreSQL source needs table and cursor_column")
    size = int(config.get("batch_rows", 100_000))
    last = cursor.get("value") if cursor else None
    ident = sql.Identifier(*str(table).split("."))
    col = sql.Identifier(str(column))
    try:
        with psycopg.connect(dsn) as conn:
            while True:  # one query per batch of rows, not per row
                where = sql.SQL("WHERE {c} > %s").format(c=col) if last is not None else sql.SQL("")
                query = sql.SQL("SELECT * FROM {t} {w} ORDER BY {c} LIMIT %s").format(
                    t=ident, w=where, c=col
                )
                params = (last, size) if last is not None else (size,)
                cur = conn.execute(query, params)
                names = [d.name for d in cur.description or []]
                rows = cur.fetchall()
                if not rows:
                    return
                frame = pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
                start = last
                last = frame.get_column(str(column))[-1]
                yield Batch(
                    frame,
                    f"postgresql:{table}",
                    cursor={"column": column, "after": _plain(start), "value": _plain(last)},
                )
                if len(rows) < size:
                    return
    except psycopg.Error as exc:
        raise ProviderError("reading the PostgreSQL source failed", error=str(exc)) from exc


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _get(
    http: httpx.Client, url: str, params: dict[str, Any], headers: dict[str, str], name: str
) -> httpx.Response:
    """One page; errors typed as the breaker judges them (5xx, 429, transport: failures)."""
    try:
        response = http.get(url, params=params or None, headers=headers)
    except httpx.HTTPError as exc:
        raise TransientProviderError(
            "the HTTP source could not be reached", provider=name, error=str(exc)
        ) from exc
    where = str(response.url.copy_with(query=None))
    if response.status_code == 429:
        after = response.headers.get("Retry-After", "")
        raise RateLimitedError(
            "the HTTP source throttled us", provider=name, url=where, status_code=429,
            retry_after_s=float(after) if after.isdigit() else None,
        )  # fmt: skip
    if response.status_code >= 500:
        raise TransientProviderError(
            "the HTTP source answered with an error",
            provider=name, url=where, status_code=response.status_code,
        )  # fmt: skip
    if response.status_code >= 400:
        raise ProviderError(
            "the HTTP source answered with an error",
            provider=name, url=where, status_code=response.status_code,
        )  # fmt: skip
    return response


def read_http(
    url: str,
    config: Mapping[str, Any],
    client: httpx.Client | None = None,
    *,
    limiter: RateLimiter | None = None,
    breakers: Breakers | None = None,
) -> Iterator[Batch]:
    """Yield one batch per page of a JSON API (`next` links or page numbers).

    Every page goes through the platform's rate limiter and circuit breaker (in Redis when
    `resilience.backend` is redis), as the provider `config['provider']` (default
    `http:<host>`): its limits are the settings' `resilience.limits` of that name, or the
    source's own `rate_limits` (e.g. `["5/second"]`).
    """
    name = str(config.get("provider") or f"http:{httpx.URL(url).host}").lower()
    if limiter is not None and config.get("rate_limits"):
        limiter.set_limits(name, [str(r) for r in config["rate_limits"]])
    breaker = breakers.get(name) if breakers is not None else None
    own = client is None
    http = client or httpx.Client(timeout=_TIMEOUT_S)
    items_key = config.get("items_key", "data")
    next_key = config.get("next_key", "next")
    page_param = config.get("page_param")
    max_pages = int(config.get("max_pages", 10_000))
    params: dict[str, Any] = dict(config.get("params", {}))
    headers = dict(config.get("headers", {}))
    offset = 0
    next_url: str | None = url
    try:
        for page in range(1, max_pages + 1):
            if next_url is None:
                return
            if page_param:
                params[page_param] = page
            target, query = next_url, dict(params)
            fetch = functools.partial(_get, http, target, query, headers, name)
            # the call stays in the limiter's windows until its answer is back
            with limiter.call(name, hold_s=_TIMEOUT_S) if limiter else contextlib.nullcontext():
                response = breaker.call(fetch) if breaker is not None else fetch()
            body = response.json()
            items = body.get(items_key, []) if isinstance(body, dict) else body
            if not items:
                return
            frame = pl.from_dicts(items, infer_schema_length=None)
            yield Batch(frame, str(response.url.copy_with(query=None)), offset_start=offset,
                        extra={"page": page})  # fmt: skip
            offset += frame.height
            if page_param:
                next_url = url
            else:
                next_url = body.get(next_key) if isinstance(body, dict) else None
                params = {}  # a next link carries its own query
    finally:
        if own:
            http.close()
