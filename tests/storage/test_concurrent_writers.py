"""Several writers on one data directory: real `qv ingest` processes, and threads of one Platform.

Every scenario starts its processes at once on a fresh directory and compares what landed
with a single-process ingest of the same requests into another directory: the same bars
(no duplicate (symbol, timeframe, ts), equal values), the same corporate actions once
each, per job the same quarantined rows, quality scores and counts, every job in the
catalog, knowledge times that fit the jobs that wrote them.

The processes make the races likely:

- a start gate: the test holds every partition lock of the new lake (`ParquetLake.frozen`)
  until each process waits for one (seen in `/proc/locks`), so all first writes start
  together instead of spread over the processes' start-up times;
- few lake buckets (writers contend for the same partition files) and one symbol per
  batch (many read-modify-writes per process);
- the data directory named three ways (absolute, relative, through a symlink: the locks
  must not depend on the spelling), and a different bucket count asked for by each
  process (the lake's layout file decides; see also the layout test with threads).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import quantivista as qv
from quantivista.acquisition.analytics import ProviderAnalytics
from quantivista.config import StorageSettings
from quantivista.model.jobs import IngestionJob
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.providers.simulator.market import SimulatedMarket
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.catalog import SqliteCatalog
from quantivista.storage.lake.files import atomic_write_base_ipc, atomic_write_parquet
from quantivista.storage.lake.retention import archive_expired

BUCKETS = 1  # the lake's: every writer contends for one file; each process asks for more
VALUES = ["open", "high", "low", "close", "volume", "vwap", "trades", "quality_flags"]
BAR_KEY = ["symbol", "timeframe", "ts"]
ACTION_KEY = ["symbol", "action_type", "ex_date", "provider"]
SCORE_COLUMNS = ["symbol", "timeframe", "date", "rows", "rejected", "flagged", "missing", "score"]
DAILY = Timeframe.parse("1d")
HELD_COLUMNS = ["symbol", "timeframe", "ts", "rule", "severity", "open", "high", "low", "close"]
GATE_TIMEOUT_S = 120.0
HALVES = [("01-01", "06-30"), ("07-01", "12-31")]


@dataclass(frozen=True)
class Run:
    """One `qv ingest` command."""

    symbols: tuple[str, ...]
    start: str
    end: str
    timeframe: str = "1d"

    def args(self) -> list[str]:
        return [*self.symbols, "--start", self.start, "--end", self.end, "-t", self.timeframe]


@pytest.fixture(scope="module")
def universe() -> list[str]:
    """Return tickers of the simulated market, with the renamed and the merged company."""
    market = SimulatedMarket()
    renamed = next(i for i in market.instruments if i.former_symbol)
    merged = next(i for i in market.instruments if i.delisted_on)
    assert renamed.former_symbol is not None
    plain = [s for s in market.symbols() if s not in (renamed.symbol, merged.symbol)]
    # renames, a merger and a delisting land in the action file alongside splits/dividends
    return [renamed.former_symbol, renamed.symbol, merged.symbol, *plain[:13]]


def _qv() -> str:
    script = Path(sys.executable).with_name("qv")
    return str(script) if script.exists() else "qv"


def _env(index: int, fault_rate: float) -> dict[str, str]:
    return {
        **os.environ,
        "QV_STORAGE__BUCKETS": str(BUCKETS + 1 + index),  # the layout file overrides it
        "QV_INGEST__SYMBOLS_PER_BATCH": "1",
        "QV_SIMULATOR__FAULT_RATE": str(fault_rate),
    }


def _spellings(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield (how to name `root`, working directory) in turn: absolute, relative, symlink."""
    link = root.parent / f"{root.name}-link"
    link.symlink_to(root, target_is_directory=True)
    while True:
        yield str(root), root.parent
        yield root.name, root.parent
        yield str(link), Path("/")


def _flock_waiters(lock_files: Sequence[Path]) -> set[int]:
    """Return the ids of processes waiting for a `flock` on one of the files (Linux)."""
    inodes = {os.stat(f).st_ino for f in lock_files}
    waiting = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # 1: -> FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> ...
        waits = len(fields) > 6 and fields[1] == "->" and fields[2] == "FLOCK"
        if waits and int(fields[6].rsplit(":", 1)[1]) in inodes:
            waiting.add(int(fields[5]))
    return waiting


def _await_gate(lake: ParquetLake, procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Return once every process waits for a partition lock (or one has ended)."""
    if not Path("/proc/locks").exists():
        return  # elsewhere the processes start as they come: less overlap, same checks
    locks = sorted(lake.layout.locks.glob("*.lock"))
    pids = {p.pid for p in procs}
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if pids <= _flock_waiters(locks):
            return
        time.sleep(0.02)  # a test helper watching other processes: nothing to wait on


def ingest_concurrently(root: Path, runs: Sequence[Run], fault_rate: float = 0.0) -> None:
    """Run one `qv -d root ingest ...` per run at once; assert that each exits 0."""
    root.mkdir()
    lake = ParquetLake(root, StorageSettings(buckets=BUCKETS))
    names = _spellings(root)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        with lake.frozen():  # the start gate (see the module docstring)
            for i, run in enumerate(runs):
                name, cwd = next(names)
                log = root.parent / f"{root.name}-{i}.log"
                with open(log, "wb") as out:
                    procs.append(
                        subprocess.Popen(
                            [_qv(), "-d", name, "ingest", *run.args(), "-p", "synthetic"],
                            cwd=cwd,
                            env=_env(i, fault_rate),
                            stdout=out,
                            stderr=subprocess.STDOUT,
                        )
                    )
                logs.append(log)
            _await_gate(lake, procs)
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:  # only after a failure of the test itself (a timeout, ...)
            if p.poll() is None:
                p.kill()
                p.wait()
    failed = [
        (run, log.read_text()[-2000:])
        for code, run, log in zip(codes, runs, logs, strict=True)
        if code != 0
    ]
    assert not failed, f"{len(failed)} of {len(runs)} processes failed: {failed}"


def ingest_sequentially(root: Path, runs: Sequence[Run], fault_rate: float = 0.0) -> None:
    """Ingest the runs one after another in this process: the single-writer reference."""
    with qv.Platform.open(
        root,
        storage={"buckets": BUCKETS},
        ingest={"symbols_per_batch": 1},
        simulator={"fault_rate": fault_rate},
    ) as p:
        for run in runs:
            p.ingest(list(run.symbols), run.start, run.end, run.timeframe, ["synthetic"])


def _sorted(df: pl.DataFrame, key: Sequence[str]) -> pl.DataFrame:
    return df.sort(key, nulls_last=True)


JobKey = tuple[tuple[str, ...], str, datetime | None, datetime | None]


def _jobs_by_request(p: qv.Platform) -> dict[JobKey, list[IngestionJob]]:
    """Return the catalog's jobs grouped by what they were asked for."""
    found: dict[JobKey, list[IngestionJob]] = {}
    for job in p.jobs(limit=1000):
        key = (tuple(job.symbols), str(job.timeframe), job.request_start, job.request_end)
        found.setdefault(key, []).append(job)
    return found


def assert_same_store(root: Path, reference: Path, runs: Sequence[Run]) -> None:
    """Assert that `root` holds what the single-process `reference` holds (see the module)."""
    with qv.Platform.open(root) as p, qv.Platform.open(reference) as ref:
        # bars: the union of every request, once each, with the market's values
        for tf in sorted({r.timeframe for r in runs}):
            symbols = sorted({s for r in runs if r.timeframe == tf for s in r.symbols})
            got = p.bars(symbols, timeframe=tf, follow_renames=False)
            want = ref.bars(symbols, timeframe=tf, follow_renames=False)
            assert got.height > 0
            assert not got.select(BAR_KEY).is_duplicated().any(), f"duplicate {tf} bars"
            assert_frame_equal(
                _sorted(got.select(*BAR_KEY, *VALUES, "provider"), BAR_KEY),
                _sorted(want.select(*BAR_KEY, *VALUES, "provider"), BAR_KEY),
            )
        # corporate actions: each kept once
        got_actions, want_actions = p.actions(), ref.actions()
        assert got_actions.height > 0
        assert not got_actions.select(ACTION_KEY).is_duplicated().any()
        assert_frame_equal(_sorted(got_actions, ACTION_KEY), _sorted(want_actions, ACTION_KEY))
        # jobs, their counts, quarantine and scores: per run, as the reference job has them
        jobs, ref_jobs = _jobs_by_request(p), _jobs_by_request(ref)
        assert {k: len(v) for k, v in jobs.items()} == {k: len(v) for k, v in ref_jobs.items()}
        assert sum(len(v) for v in jobs.values()) == len(runs)
        for key, mine in jobs.items():
            theirs = ref_jobs[key][0]
            for job in mine:
                assert job.status == theirs.status, (job.job_id, job.error_details)
                assert (job.records_processed, job.records_failed) == (
                    theirs.records_processed,
                    theirs.records_failed,
                )
                report, ref_report = p.quality_report(job.job_id), ref.quality_report(theirs.job_id)
                assert (report.total_records, report.invalid_records) == (
                    ref_report.total_records,
                    ref_report.invalid_records,
                )
                held = p.quarantine(job_id=job.job_id).select(HELD_COLUMNS)
                ref_held = ref.quarantine(job_id=theirs.job_id).select(HELD_COLUMNS)
                assert held.height == job.records_failed
                assert_frame_equal(_sorted(held, HELD_COLUMNS), _sorted(ref_held, HELD_COLUMNS))
                scores = p.quality_scores(job_id=job.job_id, timeframe=None).select(SCORE_COLUMNS)
                ref_scores = ref.quality_scores(job_id=theirs.job_id, timeframe=None)
                assert scores.height > 0
                assert_frame_equal(
                    _sorted(scores, SCORE_COLUMNS[:3]),
                    _sorted(ref_scores.select(SCORE_COLUMNS), SCORE_COLUMNS[:3]),
                )
        assert_as_of_consistent(p, runs, [j for js in jobs.values() for j in js])


def assert_as_of_consistent(p: qv.Platform, runs: Sequence[Run], jobs: list[IngestionJob]) -> None:
    """Assert that knowledge times fit the jobs, and as-of reads replay them exactly.

    Every bar carries the id of a job in the catalog and was stored while that job ran;
    as of any instant, the store knew exactly the bars stored by then (all writers agreed
    on the values, so nothing was superseded: identical rewrites keep their first time).
    """
    spans = {j.job_id: (j.start_time, j.end_time) for j in jobs}
    instants = sorted({t for j in jobs for t in (j.start_time, j.end_time) if t is not None})
    for tf in sorted({r.timeframe for r in runs}):
        symbols = sorted({s for r in runs if r.timeframe == tf for s in r.symbols})
        now = p.bars(symbols, timeframe=tf, follow_renames=False)
        bounds = pl.DataFrame(
            [(k, lo, hi) for k, (lo, hi) in spans.items()],
            schema={
                "job_id": pl.String,
                "lo": now["ingested_at"].dtype,
                "hi": now["ingested_at"].dtype,
            },
            orient="row",
        )
        placed = now.join(bounds, on="job_id", how="left")
        assert placed["lo"].null_count() == 0, "bars of a job the catalog does not know"
        stray = placed.filter(
            (pl.col("ingested_at") < pl.col("lo")) | (pl.col("ingested_at") > pl.col("hi"))
        )
        assert stray.is_empty(), "bars stored outside the run of the job they name"
        before_all = min(instants) - timedelta(microseconds=1)
        assert p.bars(symbols, timeframe=tf, as_of=before_all, follow_renames=False).is_empty()
        for t in instants:
            seen = p.bars(symbols, timeframe=tf, as_of=t, follow_renames=False)
            known = now.filter(pl.col("ingested_at") <= t)
            assert_frame_equal(_sorted(seen, BAR_KEY), _sorted(known, BAR_KEY))


def _scenario(runs: Sequence[Run], tmp_path: Path, fault_rate: float = 0.0) -> None:
    ingest_sequentially(tmp_path / "reference", runs, fault_rate)
    ingest_concurrently(tmp_path / "shared", runs, fault_rate)
    assert_same_store(tmp_path / "shared", tmp_path / "reference", runs)


# -- processes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("processes", [2, 4])
def test_ingest_disjoint_symbols_from_processes_loses_nothing(
    processes: int, universe: list[str], tmp_path: Path
) -> None:
    runs = [
        Run(tuple(universe[3 * i : 3 * i + 3]), "2022-01-01", "2024-12-31")
        for i in range(processes)
    ]
    # with faults: every process quarantines rows and scores damaged days
    _scenario(runs, tmp_path, fault_rate=0.02)


@pytest.mark.parametrize("processes", [2, 4])
def test_ingest_overlapping_symbols_and_ranges_from_processes_stores_each_bar_once(
    processes: int, universe: list[str], tmp_path: Path
) -> None:
    both = tuple(universe[0:6])
    runs = [
        Run(both, "2022-01-01", "2023-12-31"),  # the same symbols and range ...
        Run(tuple(universe[3:9]), "2023-01-01", "2024-12-31"),  # ... overlapping ones
        Run(both, "2022-01-01", "2023-12-31"),
        Run(tuple(universe[4:10]), "2022-07-01", "2024-06-30"),
    ][:processes]
    _scenario(runs, tmp_path)


@pytest.mark.parametrize("processes", [2, 4])
def test_ingest_daily_and_minute_bars_from_processes_at_once(
    processes: int, universe: list[str], tmp_path: Path
) -> None:
    runs = [
        Run(tuple(universe[0:6]), "2023-01-01", "2024-12-31", "1d"),
        Run(tuple(universe[1:5]), "2024-11-25", "2024-12-06", "1m"),
        Run(tuple(universe[3:9]), "2023-06-01", "2024-12-31", "1d"),
        Run(tuple(universe[3:7]), "2024-11-29", "2024-12-11", "1m"),
    ][:processes]
    _scenario(runs, tmp_path)


_UPSERTS = """
import sys
import polars as pl
import quantivista as qv
from datetime import date
root, tag, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
with qv.Platform.open(root) as p:
    for k in range(rounds):
        ids = [f"{tag}{k:02d}{i}" for i in range(3)]
        p.instruments.upsert(pl.DataFrame({
            "instrument_id": ids, "name": ids, "symbol": [f"{tag}{k:02d}S{i}" for i in range(3)],
        }))
        p.write_actions(pl.DataFrame({
            "symbol": [f"{tag}{k:02d}S{i}" for i in range(3)], "action_type": ["dividend"] * 3,
            "ex_date": [date(2024, 1, 2 + i) for i in range(3)], "amount": [0.5] * 3,
        }), provider="test")
"""


def test_instrument_and_action_upserts_from_processes_keep_every_row(tmp_path: Path) -> None:
    writers, rounds = 4, 8
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _UPSERTS, str(tmp_path), f"W{w}", str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for w in range(writers)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * writers, outputs
    with qv.Platform.open(tmp_path) as p:
        assert p.instruments.instruments().height == writers * rounds * 3
        assert p.instruments.symbol_history().height == writers * rounds * 3
        actions = p.actions()
        assert actions.height == writers * rounds * 3
        assert not actions.select(ACTION_KEY).is_duplicated().any()


# -- threads of one process ----------------------------------------------------------------------
def _together(workers: Sequence[Callable[[], None]]) -> None:
    """Run the workers on threads released at once; re-raise the first failure."""
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def run(work: Callable[[], None]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_threads_writing_through_one_platform_keep_every_row(
    universe: list[str], tmp_path: Path
) -> None:
    market = SimulatedMarket()
    days = [(f"{y}-{h}", f"{y}-{t}") for y in range(2021, 2025) for h, t in HALVES]
    parts = {name: universe[3 * n : 3 * n + 3] for n, name in enumerate(("A", "B"))}

    with qv.Platform.open(tmp_path, storage={"buckets": 1}) as p:  # one file for every symbol

        def writer(name: str) -> Callable[[], None]:
            def work() -> None:
                for k, (lo, hi) in enumerate(days):
                    for symbol in parts[name]:
                        p.write_bars(market.bars(symbol, lo, hi, "1d"), source="synthetic")
                    p.write_actions(
                        pl.DataFrame(
                            {
                                "symbol": [f"{name}{k}"],
                                "action_type": ["dividend"],
                                "ex_date": [date(2024, 1, 2 + k)],
                                "amount": [0.1],
                            }
                        ),
                        provider="test",
                    )
                    p.instruments.upsert(
                        pl.DataFrame(
                            {
                                "instrument_id": [f"{name}{k}"],
                                "name": [f"{name}{k}"],
                                "symbol": [f"{name}{k}"],
                            }
                        )
                    )

            return work

        _together([writer("A"), writer("B")])
        symbols = [s for v in parts.values() for s in v]
        got = p.bars(symbols, timeframe="1d", follow_renames=False)
        want = pl.concat([market.bars(s, days[0][0], days[-1][1], "1d") for s in symbols])
        assert not got.select(BAR_KEY).is_duplicated().any()
        assert_frame_equal(
            _sorted(got.select(*BAR_KEY, "close"), BAR_KEY),
            _sorted(want.select(*BAR_KEY, "close"), BAR_KEY),
        )
        assert p.actions().height == 2 * len(days)
        assert p.instruments.instruments().height == 2 * len(days)


@pytest.mark.parametrize("daily_format", ["arrow", "parquet"])
def test_readers_see_whole_files_while_another_writer_replaces_them(
    tmp_path: Path, daily_format: str
) -> None:
    """Uncached reads, as-of reads, stats and symbols open each file once: never two versions.

    Reading a path twice (footer, then pages) while another writer replaces the file fails
    with "invalid thrift" or a polars panic; the lake reads through one handle per file.
    """
    market = SimulatedMarket()
    symbols = sorted(market.symbols()[:8])
    first = datetime(2025, 1, 1, tzinfo=UTC)
    bars = coerce_bars(
        pl.concat([market.bars(s, "2015-01-01", "2024-12-31", "1d") for s in symbols]),
        job_id="j0",
        ingested_at=first,
    )
    settings = StorageSettings(buckets=1, cache_mb=0, write_threads=1, daily_format=daily_format)
    lake = ParquetLake(tmp_path, settings)
    lake.upsert(bars)
    later = bars.with_columns(pl.col("volume") + 1, ingested_at=pl.lit(first + timedelta(days=1)))
    lake.upsert(later)  # the first version goes to history
    data = lake.base_path(lake.partition_dir("1d", symbols[0]))
    assert data.suffix == f".{daily_format}"
    versions = [later, later.with_columns(pl.col("close") * 1.5)]  # same rows, other bytes
    runs = [(s, n) for s, n in later.group_by("symbol", maintain_order=True).len().rows()]
    stop = threading.Event()

    def replace() -> None:  # what another process's writes do to the file, as fast as it can
        k = 0
        while not stop.is_set():
            k += 1
            if daily_format == "arrow":
                atomic_write_base_ipc(versions[k % 2], runs, data, settings, {})
            else:
                atomic_write_parquet(versions[k % 2], data, settings)

    def read() -> None:
        reader = ParquetLake(tmp_path, settings)
        try:
            for _ in range(60):
                assert reader.read(symbols, DAILY).height == bars.height
                then = reader.read(symbols, DAILY, as_of=first + timedelta(hours=1))
                assert then.height == bars.height
                assert reader.stats()["rows"].sum() == bars.height
                assert reader.symbols() == symbols
        finally:
            stop.set()

    _together([replace, read])


def test_partition_folder_creation_survives_a_pruner_removing_its_new_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete prunes empty partition folders: a writer creating one meanwhile still writes.

    The pruner strikes between the two steps of `mkdir(parents=True)`: after the parent
    was created, before the child (the window is microseconds wide; forced here).
    """
    leaf = tmp_path / "timeframe=1m" / "bucket=000" / "month=2024-01"
    real_mkdir = os.mkdir
    pruned: list[Path] = []

    def mkdir_then_prune(path: Any, mode: int = 0o777) -> None:
        real_mkdir(path, mode)
        if Path(path) == leaf.parent and not pruned:
            pruned.append(Path(path))
            os.rmdir(path)  # the pruner finds the new parent still empty

    monkeypatch.setattr(os, "mkdir", mkdir_then_prune)
    atomic_write_parquet(pl.DataFrame({"x": [1]}), leaf / "data.parquet", StorageSettings())
    assert pruned
    assert pl.read_parquet(leaf / "data.parquet")["x"].to_list() == [1]


def test_partition_folder_creation_survives_a_pruner_removing_it_after_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mkdir(exist_ok=True)` raises FileExistsError when the folder vanished after EEXIST."""
    leaf = tmp_path / "timeframe=1m" / "bucket=000" / "month=2024-01"
    real_mkdir = os.mkdir
    pruned: list[Path] = []

    def exists_then_pruned(path: Any, mode: int = 0o777) -> None:
        if Path(path) == leaf and not pruned:
            real_mkdir(path, mode)  # another writer created it ...
            pruned.append(Path(path))
            os.rmdir(path)  # ... and a pruner removed it before this writer looked
            raise FileExistsError(errno.EEXIST, "File exists", str(path))
        real_mkdir(path, mode)

    monkeypatch.setattr(os, "mkdir", exists_then_pruned)
    atomic_write_parquet(pl.DataFrame({"x": [1]}), leaf / "data.parquet", StorageSettings())
    assert pruned
    assert pl.read_parquet(leaf / "data.parquet")["x"].to_list() == [1]


def test_provider_stats_saved_by_writers_finishing_at_once(tmp_path: Path) -> None:
    """Every `qv ingest` keeps its provider stats in the catalog when it ends."""
    path = tmp_path / "catalog.sqlite"
    SqliteCatalog(path).close()

    def save() -> None:
        catalog = SqliteCatalog(path)
        stats = ProviderAnalytics().as_dict()
        try:
            for _ in range(100):
                catalog.put_state("provider_stats", stats)
        finally:
            catalog.close()

    _together([save, save, save])
    assert SqliteCatalog(path).get_state("provider_stats") == ProviderAnalytics().as_dict()


def test_a_new_lake_opened_at_once_with_different_bucket_counts_gets_one_layout(
    tmp_path: Path,
) -> None:
    """The first opener fixes the bucket count; the others read it, never write their own."""
    for attempt in range(20):
        root = tmp_path / f"lake{attempt}"
        seen: list[int] = []

        def opener(buckets: int, root: Path = root, seen: list[int] = seen) -> Callable[[], None]:
            return lambda: seen.append(ParquetLake(root, StorageSettings(buckets=buckets)).buckets)

        _together([opener(b) for b in (1, 2, 3, 4)])
        assert len(set(seen)) == 1, seen
        assert ParquetLake(root).buckets == seen[0]


def test_listings_skip_a_concurrent_writers_unfinished_files(tmp_path: Path) -> None:
    """Quarantine, releases and the raw manifest never read another writer's temporary."""
    p = qv.Platform.open(tmp_path)
    try:
        rows = SimulatedMarket().bars("QULGXK", "2024-01-02", "2024-01-05", "1d")
        p.write_bars(rows.with_columns(pl.col("high") * 0.5))  # high below open: quarantined
        held = p.quarantine()
        assert held.height > 0
        layout = p.runtime.backend.bars.layout  # type: ignore[attr-defined]
        for folder in (
            next(layout.quarantine.glob("job_id=*")),
            layout.released,
            layout.bronze / "_manifest" / "job_id=j",
        ):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ".tmp-0123456789abcdef.parquet").write_bytes(b"PAR1 half-written")
        assert_frame_equal(p.quarantine(), held)
        assert p.runtime.backend.quarantine.count() == held.height
        assert p.runtime.backend.quarantine.releases().is_empty()
        assert p.runtime.backend.raw.manifest().is_empty()
    finally:
        p.close()


def test_a_new_catalog_opened_at_once_by_several_writers_opens_for_each(tmp_path: Path) -> None:
    """Turning a new SQLite file to WAL fails at once ("locked") while another does it too."""
    for attempt in range(50):
        path = tmp_path / f"lake{attempt}" / "catalog.sqlite"

        def open_and_write(path: Path = path) -> None:
            catalog = SqliteCatalog(path)
            try:
                catalog.put_state(f"{threading.get_ident()}", {"opened": True})
            finally:
                catalog.close()

        _together([open_and_write] * 8)


def _hourly(symbol: str, version: float = 0.0) -> pl.DataFrame:
    start = datetime(2024, 1, 22, 14, 30, tzinfo=UTC)
    ts = pl.datetime_range(start, start + timedelta(days=14), "1h", eager=True)
    price = pl.Series([100.0 + i + version for i in range(len(ts))])
    frame = pl.DataFrame(
        {"symbol": symbol, "timeframe": "1m", "ts": ts, "open": price, "high": price + 1}
    ).with_columns(low=pl.col("open"), close=pl.col("open"), volume=pl.lit(1.0))
    return coerce_bars(frame, provider="t", job_id=f"j{symbol}", ingested_at=datetime.now(UTC))


def test_archival_twice_at_once_while_a_writer_adds_old_bars_loses_nothing(tmp_path: Path) -> None:
    """Two archivals and a writer on one lake: every bar readable once, the index exact."""
    settings = StorageSettings(buckets=1, write_threads=1, archive_url=(tmp_path / "cold").as_uri())
    hot = tmp_path / "hot"
    now = datetime(2024, 2, 5, tzinfo=UTC)  # keeping 3 days hot: most of the bars go cold
    symbols = [f"S{i:02d}" for i in range(8)]
    writer = ParquetLake(hot, settings)
    writer.upsert(_hourly("S00"))

    def write() -> None:
        for symbol in symbols[1:]:
            writer.upsert(_hourly(symbol))

    def archive() -> None:
        lake = ParquetLake(hot, settings)
        for _ in range(4):
            archive_expired(lake, {"1m": 3}, now)

    _together([write, archive, archive])
    reader = ParquetLake(hot, settings)
    assert reader.cold_index is not None
    got = reader.read(symbols, Timeframe.parse("1m"))
    assert not got.select("symbol", "ts").is_duplicated().any()
    want = pl.concat([_hourly(s) for s in symbols])
    assert_frame_equal(
        _sorted(got.select("symbol", "ts", "close"), ["symbol", "ts"]),
        _sorted(want.select("symbol", "ts", "close"), ["symbol", "ts"]),
    )
    recorded = {e.rel: (e.identity, dict(e.symbols)) for e in reader.cold_index.entries()}
    assert recorded
    reader.cold_index.rebuild()  # from a listing of the archive itself
    assert {e.rel: (e.identity, dict(e.symbols)) for e in reader.cold_index.entries()} == recorded
