"""Market data: bars (paged JSON, CSV, Arrow, Parquet), latest bar, actions, reference data."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from itertools import chain
from typing import Annotated, Any, Literal

import polars as pl
import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from quantivista.api.cache import CachedResponse, Chunk
from quantivista.api.deps import Caller, State, require
from quantivista.api.errors import COMMON_RESPONSES
from quantivista.api.fastpath import bars_cache_key
from quantivista.api.state import ApiState
from quantivista.errors import InvalidInputError, NotFoundError
from quantivista.model.auth import Scope
from quantivista.model.schema import BAR_POLARS_SCHEMA
from quantivista.services.encode import (
    MEDIA_TYPES,
    ArrowStreamEncoder,
    BodyFormat,
    TableStream,
    arrow_table,
    encode,
    etag_of,
)
from quantivista.services.queries import BarQuery
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.bulk import stored_schema, stored_tables

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["market data"], responses=COMMON_RESPONSES)

ReadBars = Annotated[Caller, Depends(require(Scope.READ_BARS))]
ReadReference = Annotated[Caller, Depends(require(Scope.READ_REFERENCE))]
_SETTLED_DAYS = 3  # history ending this long ago no longer changes (but for corrections)


def _symbols(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise InvalidInputError("symbols: give one or more, comma-separated")
    if len(items) > 5000:
        raise InvalidInputError("symbols: at most 5000 per request")
    return list(dict.fromkeys(items))


def _cursor(token: str | None) -> tuple[str, datetime] | None:
    """Decode a page token: the last (symbol, ts) of the previous page."""
    if token is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(data["s"]), datetime.fromisoformat(data["t"])
    except (ValueError, KeyError, TypeError):
        raise InvalidInputError("page_token: not a token this API issued") from None


def _token(symbol: str, ts: datetime) -> str:
    raw = json.dumps({"s": symbol, "t": ts.isoformat()}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _page(df: pl.DataFrame, after: tuple[str, datetime] | None, size: int) -> pl.DataFrame:
    if after is not None:
        symbol, ts = after
        df = df.filter((pl.col("symbol") > symbol) | ((pl.col("symbol") == symbol) &
                                                       (pl.col("ts") > ts)))  # fmt: skip
    return df.head(size + 1)


def _settled(end: datetime | None, known_at: datetime | None, now: datetime) -> bool:
    """Say whether a response can be cached by clients: past history, or an as-of view."""
    if known_at is not None and known_at <= now:
        return True
    return end is not None and end <= now - timedelta(days=_SETTLED_DAYS)


def _respond(
    request: Request,
    cached: CachedResponse,
    *,
    public: bool,
    extra: dict[str, str] | None = None,
) -> Response:
    headers = {"ETag": cached.etag, **(extra or {})}
    if cached.total is not None:
        headers["X-Total-Count"] = str(cached.total)
    headers["Cache-Control"] = "private, max-age=3600" if public else "private, no-cache"
    if request.headers.get("if-none-match") == cached.etag:
        return Response(status_code=304, headers=headers)
    if cached.parts:  # a bulk answer kept as it was streamed
        headers["Content-Length"] = str(cached.size)
        return _PartsResponse(cached.parts, cached.media_type, headers)
    return Response(cached.body, media_type=cached.media_type, headers=headers)


class _PartsResponse(Response):
    """A body of known length sent as the parts it is kept in, on the event loop.

    Each part goes to the server as it is (views of Arrow buffers: no join, no copy); with
    the length known the server writes them without chunk framing (which copies each).
    """

    def __init__(self, parts: tuple[Chunk, ...], media_type: str, headers: dict[str, str]):
        super().__init__(None, media_type=media_type, headers=headers)
        self.parts = parts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        for part in self.parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


_BARS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "bars: JSON pages, or the whole range as CSV, Arrow IPC or Parquet",
        "content": {media: {} for media in MEDIA_TYPES.values()},
    },
    304: {"description": "not modified since the ETag given in If-None-Match"},
}


@router.get(
    "/bars",
    summary="Stored bars, raw or adjusted, now or as of a time",
    responses=_BARS_RESPONSES,
)
async def bars(
    request: Request,
    state: State,
    who: ReadBars,
    symbols: Annotated[str, Query(description="Comma-separated symbols.", min_length=1)],
    timeframe: Annotated[str, Query(pattern=r"^\d+(m|h|d|w|mo)$")] = "1d",
    start: date | datetime | None = None,
    end: date | datetime | None = None,
    adjust: Literal["none", "splits", "all"] = "none",
    dividend_convention: Literal["crsp", "alpha_vantage"] = "crsp",
    as_of: Annotated[
        datetime | None, Query(description="Knowledge time: the bars as the store knew them.")
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    page_token: str | None = None,
    format: BodyFormat = BodyFormat.json,  # the API's public parameter name
    session: Annotated[
        Literal["regular", "extended"],
        Query(description="Intraday: the regular session, or with pre/post market too."),
    ] = "regular",
) -> Response:
    """Return bars in the canonical schema, sorted by symbol and ts.

    JSON is paged (`next_page_token`); CSV, Arrow IPC and Parquet return the whole range
    (bulk), capped by `limit` when given.
    """
    names = _symbols(symbols)
    state.auth.entitled(who.tenant, dataset="bars", symbols=names, timeframe=timeframe)
    query = BarQuery.of(
        names, start, end, timeframe, adjust=adjust, dividend_convention=dividend_convention,
        known_at=as_of, session=session,
    )  # fmt: skip
    size = min(limit or state.runtime.settings.api.page_size, state.runtime.settings.api.page_size)
    after = _cursor(page_token)
    key = bars_cache_key(request.url.query)
    public = _settled(query.end, query.known_at, state.runtime.clock.now())
    hit = state.cache.get(key) if public else None
    if hit is not None:  # answered on the event loop: no thread hop for a cached response
        return _respond(request, hit, public=True)
    if format is BodyFormat.arrow:  # bulk: streamed as it is encoded, never held whole
        return await _stream_arrow(request, state, query, key, public, limit)
    cached = await run_in_threadpool(_encode_bars, state, query, format, after, size, limit)
    if public:
        state.cache.put(key, cached)
    return _respond(request, cached, public=public)


def _encode_bars(
    state: ApiState,
    query: BarQuery,
    format: BodyFormat,
    after: tuple[str, datetime] | None,
    size: int,
    limit: int | None,
) -> CachedResponse:
    """Read and encode bars (in a worker thread); the response knows the total rows."""
    df = state.runtime.queries.bars(query)
    if format is BodyFormat.json:
        page = _page(df, after, size)
        more = page.height > size
        page = page.head(size)
        next_token = None
        if more:
            last = page.row(-1, named=True)
            next_token = _token(str(last["symbol"]), last["ts"])
        token_json = json.dumps(next_token).encode()
        body = b'{"bars":' + encode(page, format) + b',"next_page_token":' + token_json + b"}"
    else:
        body = encode(df.head(limit) if limit else df, format)
    return CachedResponse(body, MEDIA_TYPES[format], etag_of(body), df.height)


# a bulk body up to this size is read whole before its first byte and sent with its length:
# no chunk framing (uvicorn copies each chunk to frame it) and its row count in a header;
# a larger one streams as it is read (a bounded amount of memory per request)
_KNOWN_LENGTH_BYTES = 256 << 20
_ENCODED_GROUP_BYTES = 16 << 20  # a known-length bulk body is encoded this much at a time
_PIECES = 8  # a bulk read in up to this many symbol groups, the next read while one is sent
_PIECE_SYMBOLS = 16  # no group smaller than this: each read has a fixed cost


def _pieces(query: BarQuery) -> list[BarQuery]:
    """Split a query into groups of symbols whose bars, one after the other, are the whole.

    Reads are sorted by symbol, and one symbol's bars never depend on another's: the
    groups of the sorted symbols give the same rows in the same order.
    """
    names = sorted(set(query.symbols))
    size = max(_PIECE_SYMBOLS, -(-len(names) // _PIECES))
    return [replace(query, symbols=names[i : i + size]) for i in range(0, len(names), size)]


async def _stream_arrow(
    request: Request,
    state: ApiState,
    query: BarQuery,
    key: str,
    public: bool,
    limit: int | None,
) -> Response:
    """Answer an Arrow IPC stream, record batch by record batch.

    A plain bulk read (no limit, raw bars as they are now, daily or longer) streams each
    bucket file's record batches as the lake stores them (`lake.bulk`), read a few files
    ahead on worker threads: symbols come bucket by bucket (each symbol's bars together, by
    ts), not sorted across buckets. Any other read goes in groups of symbols, sorted: the
    next group is read and encoded on a worker thread while the previous one is sent.
    A body up to `_KNOWN_LENGTH_BYTES` is sent with Content-Length and X-Total-Count: a
    plain read's tables are read and measured (their encoded size, without encoding them)
    before the first byte, then encoded one by one as they are sent (`_EncodedResponse`);
    any other read is read and encoded whole first. A larger body streams as it is read,
    chunked, without X-Total-Count (a repeat, from the cache, has both). The entity tag
    names the query and the store's data epoch (what decides the content), so a 304 needs
    no body and a large body needs no hashing.
    """
    etag = etag_of(f"{state.cache.epoch()}|{key}".encode())
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600" if public else
               "private, no-cache"}  # fmt: skip
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    media = MEDIA_TYPES[BodyFormat.arrow]
    empty = pl.DataFrame(schema=BAR_POLARS_SCHEMA)
    stored = None if limit else _stored_tables(state, query)
    parts: Iterator[Callable[[], tuple[list[Chunk], int]]]
    finish: Callable[[], bytes]
    done: list[Chunk] = []
    total = 0
    if stored is not None:
        stream = TableStream(stored_schema())
        held, measured, whole = await run_in_threadpool(
            _measure, stored, stream, _KNOWN_LENGTH_BYTES
        )
        if whole:  # sent with its length (no chunk framing) and its row count

            def keep(parts: tuple[Chunk, ...], rows: int) -> None:
                if public:  # settled history: the next ask is served whole from the cache
                    state.cache.put(key, CachedResponse(b"", media, etag, rows, parts))

            return _EncodedResponse(held, stream, measured, media, headers, keep)
        parts = chain((_feeding(stream, table) for table, _ in held),
                      _stored_parts(stored, stream))  # fmt: skip
        finish = stream.finish
    else:
        encoder = ArrowStreamEncoder()
        parts = _group_parts(state, query, encoder, limit)
        finish = functools.partial(encoder.finish, empty)
        done, total, whole = await run_in_threadpool(_gather, parts, _KNOWN_LENGTH_BYTES)
        if whole:  # sent with its length (no chunk framing) and its row count
            cached = CachedResponse(b"", media, etag, total, (*done, finish()))
            if public:  # settled history: the next ask is served whole from the cache
                state.cache.put(key, cached)
            return _respond(request, cached, public=public)
    following = next(parts, None)

    async def chunks() -> AsyncIterator[Chunk]:
        kept: list[Chunk] = []
        count = total
        pending, current = following, done
        while pending is not None:
            ahead = asyncio.ensure_future(run_in_threadpool(pending))
            try:
                for chunk in current:
                    kept.append(chunk)
                    yield chunk
            finally:
                if not ahead.done():  # the client left: let the read finish, then drop it
                    await asyncio.wait([ahead])
            current, rows = await ahead
            count += rows
            pending = next(parts, None)
        for chunk in [*current, finish()]:
            kept.append(chunk)
            yield chunk
        if public:  # settled history: the next ask is served whole from the cache
            state.cache.put(key, CachedResponse(b"", media, etag, count, tuple(kept)))

    return StreamingResponse(chunks(), media_type=media, headers=headers)


def _gather(
    parts: Iterator[Callable[[], tuple[list[Chunk], int]]], budget: int
) -> tuple[list[Chunk], int, bool]:
    """Run steps until none is left (True: the whole body) or `budget` bytes are done."""
    chunks: list[Chunk] = []
    rows = size = 0
    for step in parts:
        got, count = step()
        chunks += got
        rows += count
        size += sum(len(c) for c in got)
        if size > budget:
            return chunks, rows, False
    return chunks, rows, True


def _measure(
    tables: Iterator[pa.Table], stream: TableStream, budget: int
) -> tuple[list[tuple[pa.Table, int]], int, bool]:
    """Read tables and measure their encoded sizes until none is left (True: the whole
    body, of the length returned) or they pass `budget` bytes."""
    held: list[tuple[pa.Table, int]] = []
    size = 0
    for table in tables:
        held.append((table, stream.measure(table)))
        size += held[-1][1]
        if size > budget:
            return held, size, False
    return held, size, True


def _feeding(stream: TableStream, table: pa.Table) -> Callable[[], tuple[list[Chunk], int]]:
    """Return a step that encodes a table already read (for `_stream_arrow`'s chunks)."""
    return lambda: (stream.feed(table), table.num_rows)


class _EncodedResponse(Response):
    """A bulk body of known length encoded as it is sent, a group of tables at a time.

    The tables are read and measured before the first byte (Content-Length and
    X-Total-Count); each group is encoded on a worker thread while the previous one's
    pieces are sent: the first table alone (the first bytes leave soon), then groups of
    `_ENCODED_GROUP_BYTES` (each hand-over to a thread costs, and the two threads share
    the interpreter: a few large steps, not one per table). `keep(parts, rows)` gets the
    whole body's pieces once all are sent (the response cache). A table whose encoding
    differs from its measure stops the body short (the client sees a truncated answer
    rather than a wrong one).
    """

    def __init__(
        self,
        tables: list[tuple[pa.Table, int]],
        stream: TableStream,
        measured: int,
        media_type: str,
        headers: dict[str, str],
        keep: Callable[[tuple[Chunk, ...], int], None],
    ) -> None:
        self.rows = sum(table.num_rows for table, _ in tables)
        length = stream.length(measured)
        headers = {**headers, "X-Total-Count": str(self.rows), "Content-Length": str(length)}
        super().__init__(None, media_type=media_type, headers=headers)
        self.stream, self.keep = stream, keep
        self.groups: list[list[tuple[pa.Table, int]]] = []
        size = _ENCODED_GROUP_BYTES  # the first table starts a group of its own
        for table in tables:
            if size >= _ENCODED_GROUP_BYTES or len(self.groups) == 1:
                self.groups.append([])
                size = 0
            self.groups[-1].append(table)
            size += table[1]

    def _encode(self, group: list[tuple[pa.Table, int]]) -> list[Chunk]:
        out: list[Chunk] = []
        for table, measured in group:
            head = 0 if out or self.groups[0] is not group else self.stream.schema_size
            parts = self.stream.feed(table)
            if sum(len(p) for p in parts) != measured + head:  # pragma: no cover - a bug
                raise RuntimeError("an Arrow table encoded to another size than measured")
            out += parts
        return out

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        kept: list[Chunk] = []
        steps = iter(self.groups)
        group = next(steps, None)
        ahead = asyncio.ensure_future(run_in_threadpool(self._encode, group)) if group else None
        while ahead is not None:
            parts = await ahead
            group = next(steps, None)
            ahead = asyncio.ensure_future(run_in_threadpool(self._encode, group)) if group else None
            try:
                for part in parts:
                    await send({"type": "http.response.body", "body": part, "more_body": True})
            finally:
                if ahead is not None and not ahead.done():  # the client left: let it end
                    await asyncio.wait([ahead])
            kept += parts
        end = self.stream.finish()
        await send({"type": "http.response.body", "body": end})
        self.keep((*kept, end), self.rows)


def _stored_tables(state: ApiState, query: BarQuery) -> Iterator[pa.Table] | None:
    """Return the bucket tables of a plain bulk read from the lake, or None (not plain)."""
    store = state.runtime.queries.store
    if (
        not isinstance(store, ParquetLake)
        or query.adjust != "none"
        or query.known_at is not None
        or query.columns is not None
    ):
        return None
    if query.follow_renames:  # a renamed ticker reads segments of two names: the exact path
        actions = state.runtime.queries.reader.actions()
        renames = actions.filter(pl.col("action_type") == "symbol_change")
        touched = set(renames["symbol"].to_list()) | set(renames["new_symbol"].to_list())
        if touched.intersection(query.symbols):
            return None

    def regular(names: list[str]) -> pa.Table:  # a partition with deltas
        return arrow_table(state.runtime.queries.bars(replace(query, symbols=names)))

    return stored_tables(
        store, query.symbols, query.timeframe, query.start, query.end, fallback=regular
    )


def _stored_parts(
    tables: Iterator[pa.Table], stream: TableStream
) -> Iterator[Callable[[], tuple[list[Chunk], int]]]:
    """Yield steps that each take the next bucket table (read ahead) and encode it; the
    number of tables is not known ahead, so steps come until one finds none."""
    while True:
        found: list[bool] = []

        def step(found: list[bool] = found) -> tuple[list[Chunk], int]:
            table = next(tables, None)
            found.append(table is not None)
            if table is None:
                return [], 0
            return stream.feed(table), table.num_rows

        yield step
        if found != [True]:  # the last step found none (or never ran: the client left)
            return


def _group_parts(
    state: ApiState, query: BarQuery, encoder: ArrowStreamEncoder, limit: int | None
) -> Iterator[Callable[[], tuple[list[Chunk], int]]]:
    """Yield steps that each read and encode one group of symbols (sorted, in order)."""
    read = state.runtime.queries.bars
    for piece in [query] if limit else _pieces(query):

        def encoded(piece: BarQuery = piece) -> tuple[list[Chunk], int]:
            frame = read(piece)
            frame = frame.head(limit) if limit else frame
            return list(encoder.feed(frame) if frame.height else []), frame.height

        yield encoded


@router.get("/bars/{symbol}/latest", summary="The latest stored bar of a symbol")
def latest(state: State, who: ReadBars, symbol: str, timeframe: str = "1d") -> dict[str, Any]:
    """Return the newest bar of `symbol` (404 when none is stored)."""
    state.auth.entitled(who.tenant, dataset="bars", symbols=[symbol], timeframe=timeframe)
    row = state.runtime.queries.latest(symbol, timeframe)
    if row is None:
        raise NotFoundError(f"no {timeframe} bars stored for {symbol}", symbol=symbol)
    return row


@router.get("/actions", summary="Corporate actions")
def actions(state: State, who: ReadReference, symbols: str | None = None) -> Response:
    """Return corporate actions of some symbols (or all), by ex-date."""
    names = _symbols(symbols) if symbols else None
    state.auth.entitled(who.tenant, dataset="actions", symbols=names or [])
    df = state.runtime.queries.actions(names)
    return Response(encode(df, BodyFormat.json), media_type="application/json")


@router.get("/instruments", summary="The instrument master")
def instruments(state: State, who: ReadReference) -> Response:
    """Return every instrument."""
    state.auth.entitled(who.tenant, dataset="instruments")
    df = state.runtime.reference.instruments.instruments()
    return Response(encode(df, BodyFormat.json), media_type="application/json")


@router.get("/instruments/{symbol}", summary="The instrument using a ticker (on a date)")
def instrument(
    state: State, who: ReadReference, symbol: str, on: date | None = None
) -> dict[str, Any]:
    """Return the instrument that used `symbol` on `on` (default: its latest user)."""
    state.auth.entitled(who.tenant, dataset="instruments")
    master = state.runtime.reference.instruments
    found = master.lookup(symbol, on=on)
    if found is None:
        raise NotFoundError(f"no instrument used {symbol}", symbol=symbol)
    tickers = master.history(found.instrument_id).to_dicts()
    return {
        **found.model_dump(mode="json"),
        "tickers": json.loads(json.dumps(tickers, default=str)),
    }


@router.get("/calendars/{mic}/sessions", summary="Trading sessions of an exchange")
def sessions(state: State, who: ReadReference, mic: str, start: date, end: date) -> Response:
    """Return the sessions in [start, end] with their open and close (UTC)."""
    if end < start:
        raise InvalidInputError("end is before start", start=str(start), end=str(end))
    table = state.runtime.calendar(mic.upper()).session_table(start, end)
    return Response(encode(table, BodyFormat.json), media_type="application/json")


@router.get("/fx/{pair}", summary="An FX rate series (direct, inverted or via USD)")
def fx(
    state: State, who: ReadReference, pair: str, start: date | None = None,
    end: date | None = None,
) -> Response:  # fmt: skip
    """Return ts, rate: the price of one base currency unit in the quote currency."""
    text = pair.upper().replace("/", "")
    if len(text) != 6:
        raise InvalidInputError("pair: six letters, base then quote (EURUSD)", pair=pair)
    rates = state.runtime.reference.fx_rates(text[:3], text[3:], start, end)
    return Response(encode(rates, BodyFormat.json), media_type="application/json")


@router.get("/benchmarks/{name}", summary="An index benchmark's levels and yearly returns")
def benchmark(
    state: State, who: ReadBars, name: str, start: date | None = None, end: date | None = None
) -> dict[str, Any]:
    """Return a stored index (by id, e.g. SPX, or ticker, e.g. ^GSPC): levels and returns."""
    levels, yearly = state.runtime.reference.index_levels(name, start, end)
    state.auth.entitled(who.tenant, dataset="bars", symbols=[str(levels["symbol"][0])])
    return {
        "name": name,
        "levels": json.loads(levels.select("ts", level="close").write_json()),
        "yearly_returns": json.loads(yearly.write_json()),
        "as_of": state.runtime.clock.now().isoformat(),
    }
