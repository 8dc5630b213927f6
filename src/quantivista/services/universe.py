"""Universe-wide work, in this process or on Dask distributed, partitioned by lake buckets.

Rollups, adjusted exports and quality scores look along one series at a time, so the
universe splits into independent partitions without changing any result. A partition is
one lake bucket (symbols hashed into `storage.buckets` files; on PostgreSQL the same
grouping of symbols). Each Dask task opens the store itself (a worker may be another host)
and reads only its symbols; what it computes comes back to the caller, which writes it
once (rollups, scores) — or, for exports, each task writes its own part file.

    rollups(settings, ["1d"], engine="dask")       # intraday -> daily, into the store
    export_adjusted(settings, "out/", adjust="all", engine="dask")   # part-0003.parquet...
    rescore(settings, "1d", engine="dask")         # day scores under the current rules

`engine="local"` runs the same function once over every symbol: the reference result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal

import polars as pl

from quantivista.actions.adjust import ADJUST_MODES, Adjust
from quantivista.clock import SystemClock
from quantivista.config import Settings
from quantivista.errors import ConfigurationError
from quantivista.model.schema import BAR_POLARS_SCHEMA, SCORE_SCHEMA
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.processing.rollup import rollup
from quantivista.quality.business import load_rules
from quantivista.quality.rules import DEFAULT_RULES
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import get_calendar
from quantivista.services.queries import BarQuery, QueryService
from quantivista.storage import open_backend
from quantivista.storage.lake.bars import bucket_of

__all__ = [
    "ADJUST_MODES",
    "Engine",
    "build_validator",
    "dask_client",
    "export_adjusted",
    "follow",
    "map_partitions",
    "partitions",
    "rescore",
    "rollups",
]

Engine = Literal["local", "dask"]
Progress = Callable[[int, int], None]
"""Told (partitions done, partitions) as a universe-wide computation goes."""
_BASE = Timeframe.parse("1m")


def partitions(symbols: Sequence[str], buckets: int) -> list[list[str]]:
    """Group symbols by the lake bucket they hash into (one group per non-empty bucket)."""
    groups: dict[int, list[str]] = {}
    for symbol in sorted(symbols):
        groups.setdefault(bucket_of(symbol, buckets), []).append(symbol)
    return [groups[b] for b in sorted(groups)]


def map_partitions(
    settings: Settings,
    func: Callable[..., Any],
    symbols: Sequence[str],
    *args: Any,
    engine: Engine = "local",
    client: Any = None,
    progress: Progress | None = None,
) -> list[Any]:
    """Return `func(settings, part, number, *args)` for every partition of `symbols`.

    `local`: one call over every symbol (number 0). `dask`: one task per lake bucket.
    `progress(done, total)` is told of every partition finished.
    """
    if engine == "local":
        out = [func(settings, sorted(symbols), 0, *args)]
        if progress is not None:
            progress(1, 1)
        return out
    groups = partitions(symbols, settings.storage.buckets)
    n = len(groups)
    with dask_client(settings, client) as dask:
        extra = [[a] * n for a in args]
        futures = dask.map(func, [settings] * n, groups, list(range(n)), *extra, pure=False)
        follow(futures, progress)
        return list(dask.gather(futures))


def follow(futures: list[Any], progress: Progress | None) -> None:
    """Tell `progress` of each Dask future as it finishes (nothing without `progress`)."""
    if progress is None:
        return
    from distributed import as_completed

    progress(0, len(futures))
    for done, _ in enumerate(as_completed(futures), start=1):  # type: ignore[no-untyped-call]
        progress(done, len(futures))


def _symbols(settings: Settings, timeframe: Timeframe) -> list[str]:
    backend = open_backend(settings, create=False)
    try:
        return backend.bars.symbols(timeframe)
    finally:
        backend.close()


def build_validator(settings: Settings) -> Validator:
    """Return the platform's validator: default rules plus the business rules file, if any."""
    quality = settings.quality
    rules = DEFAULT_RULES + load_rules(quality.rules_file) if quality.rules_file else None
    calendar = get_calendar(settings.ingest.calendar)
    return Validator(calendar, rules or DEFAULT_RULES, quality, settings.intraday)


# -- rollups ----------------------------------------------------------------------------------
def _rollup_part(
    settings: Settings, symbols: list[str], _number: int, targets: list[str], session: str
) -> pl.DataFrame:
    backend = open_backend(settings, create=False)
    try:
        minutes = backend.bars.read(symbols, _BASE)
    finally:
        backend.close()
    if minutes.is_empty():
        return pl.DataFrame(schema=BAR_POLARS_SCHEMA)
    calendar = get_calendar(settings.ingest.calendar)
    return pl.concat([rollup(minutes, calendar, t, session=session) for t in targets])  # type: ignore[arg-type]


def rollups(
    settings: Settings,
    targets: Sequence[TimeframeLike] = ("1d",),
    *,
    session: str = "regular",
    engine: Engine = "local",
    client: Any = None,
    write: bool = True,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """Rebuild `targets` from every stored 1-minute bar; store them unless `write=False`.

    Return the derived bars, sorted by timeframe, symbol and ts.
    """
    names = [str(Timeframe.parse(t)) for t in targets]
    parts = map_partitions(
        settings, _rollup_part, _symbols(settings, _BASE), names, session,
        engine=engine, client=client, progress=progress,
    )  # fmt: skip
    frames: list[pl.DataFrame] = [p for p in parts if not p.is_empty()]
    derived = pl.concat(frames) if frames else pl.DataFrame(schema=BAR_POLARS_SCHEMA)
    derived = derived.sort("timeframe", "symbol", "ts")
    if write and not derived.is_empty():
        backend = open_backend(settings, create=False)
        try:
            backend.bars.upsert(derived)
        finally:
            backend.close()
    return derived


# -- adjusted exports -------------------------------------------------------------------------
def _export_part(
    settings: Settings,
    symbols: list[str],
    number: int,
    directory: str,
    start: date | None,
    end: date | None,
    timeframe: str,
    adjust: Adjust,
) -> tuple[str, int]:
    backend = open_backend(settings, create=False)
    try:
        calendar = get_calendar(settings.ingest.calendar)
        queries = QueryService(backend.bars, backend.actions, lambda: calendar, SystemClock())
        frame = queries.bars(BarQuery.of(symbols, start, end, timeframe, adjust=adjust))
    finally:
        backend.close()
    path = Path(directory) / f"part-{number:04d}.parquet"
    partial = path.with_suffix(".parquet.part")
    frame.write_parquet(partial)
    partial.replace(path)  # a reader never sees half a part
    return str(path), frame.height


def export_adjusted(
    settings: Settings,
    directory: str | Path,
    start: date | None = None,
    end: date | None = None,
    timeframe: TimeframeLike = "1d",
    *,
    adjust: Adjust = "all",
    symbols: Sequence[str] | None = None,
    engine: Engine = "local",
    client: Any = None,
    progress: Progress | None = None,
) -> list[tuple[str, int]]:
    """Write the adjusted bars of `symbols` (default: all) as Parquet parts under `directory`.

    One part per partition (`part-0000.parquet`...); return (path, rows) per part.
    """
    tf = Timeframe.parse(timeframe)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    names = list(symbols) if symbols is not None else _symbols(settings, tf)
    return map_partitions(
        settings, _export_part, names, str(out), start, end, str(tf), adjust,
        engine=engine, client=client, progress=progress,
    )  # fmt: skip


# -- quality scores ---------------------------------------------------------------------------
def _score_part(
    settings: Settings, symbols: list[str], _number: int, timeframe: str
) -> pl.DataFrame:
    backend = open_backend(settings, create=False)
    try:
        bars = backend.bars.read(symbols, Timeframe.parse(timeframe))
        actions = backend.actions.for_symbols(symbols)
    finally:
        backend.close()
    if bars.is_empty():
        return pl.DataFrame(schema=SCORE_SCHEMA)
    return build_validator(settings).validate(bars, job_id="rescore", actions=actions).scores


def rescore(
    settings: Settings,
    timeframe: TimeframeLike = "1d",
    *,
    engine: Engine = "local",
    client: Any = None,
    write: bool = True,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """Recompute the day quality scores of every stored bar under the current rules.

    Store them (the newest score of a day wins) unless `write=False`; return them sorted
    by symbol, timeframe and session.
    """
    tf = Timeframe.parse(timeframe)
    parts = map_partitions(
        settings, _score_part, _symbols(settings, tf), str(tf), engine=engine, client=client,
        progress=progress,
    )  # fmt: skip
    frames: list[pl.DataFrame] = [p for p in parts if not p.is_empty()]
    scores = pl.concat(frames) if frames else pl.DataFrame(schema=SCORE_SCHEMA)
    scores = scores.sort(scores.columns[:3])
    if write and not scores.is_empty():
        backend = open_backend(settings, create=False)
        try:
            backend.scores.add(scores, SystemClock().now())
        finally:
            backend.close()
    return scores


class dask_client:  # a context manager used like a function: `with dask_client(...)`
    """A Dask client: the one given (left open), or one on `settings.dask` (closed after)."""

    def __init__(self, settings: Settings, given: Any = None) -> None:
        self.settings = settings
        self.given = given
        self._made: list[Any] = []

    def __enter__(self) -> Any:
        if self.given is not None:
            return self.given
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "Dask needs the dask extra: pip install 'quantivista[dask]'"
            ) from exc
        cfg = self.settings.dask
        if cfg.scheduler_address:
            client = Client(cfg.scheduler_address)  # type: ignore[no-untyped-call]
        else:
            cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=cfg.workers,
                threads_per_worker=cfg.threads_per_worker,
                host=cfg.host,
                # its HTTP endpoint (metrics) on the cluster's host too, on a free port:
                # None would still listen on 0.0.0.0:8787, taken by any other cluster
                dashboard_address=f"{cfg.host}:0",
                processes=True,
            )
            self._made.append(cluster)
            client = Client(cluster)  # type: ignore[no-untyped-call]
        self._made.insert(0, client)
        return client

    def __exit__(self, *exc: object) -> None:
        for item in self._made:
            item.close()
