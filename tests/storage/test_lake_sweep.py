"""Temporaries a killed writer leaves go at `qv compact` once stale; a live writer's stay."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from quantivista.cli import app
from quantivista.config import Settings, StorageSettings
from quantivista.model.timeframe import Timeframe
from quantivista.platform import Platform
from quantivista.storage.lake import bars_deltas
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.cold import ColdTier
from quantivista.storage.lake.deltas import DELTA_DIR
from quantivista.storage.lake.sweep import sweep_cold, sweep_lake
from samples import minute_bars

M1 = Timeframe.parse("1m")
SYMBOLS = [f"S{i:02d}" for i in range(12)]
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
AFTER_S = StorageSettings().sweep_after_s  # an hour
STALE = AFTER_S + 60

# a merge killed (kill -9) between writing its hidden file and renaming it into place
_KILLED_MERGE = """
import os, signal, sys
from quantivista.storage.lake import bars_deltas
from quantivista.storage.lake.bars import ParquetLake
real = bars_deltas.atomic_write_ipc
def killed(df, path, *args, **kw):
    size = real(df, path, *args, **kw)
    if path.name.startswith(".tmp-merge-"):
        os.kill(os.getpid(), signal.SIGKILL)
    return size
bars_deltas.atomic_write_ipc = killed
lake = ParquetLake(sys.argv[1])
lake.merge_deltas(lake.bars_root / "timeframe=1m")
"""


def _store(root: Path, minutes: int = 4) -> pl.DataFrame:
    """Write a base and `minutes - 1` deltas of 1m bars; return the bars stored."""
    with Platform.open(root) as p:
        for k in range(minutes):
            p.write_bars(
                minute_bars(SYMBOLS, T0 + timedelta(minutes=k)), source="t", timeframe="1m"
            )
        lake = p.runtime.backend.bars
        assert isinstance(lake, ParquetLake) and len(lake.delta_files("1m")) == minutes - 1
        return lake.read(SYMBOLS, M1)


def _after_merge_writes(monkeypatch: pytest.MonkeyPatch, action: Callable[[Path], None]) -> None:
    """Run `action(its file)` once a merge has written its hidden file, before its locks."""
    real = bars_deltas.atomic_write_ipc

    def hooked(df: pl.DataFrame, path: Path, *args: object, **kw: object) -> int:
        size = real(df, path, *args, **kw)  # type: ignore[arg-type]
        if path.name.startswith(".tmp-merge-"):
            action(path)
        return size

    monkeypatch.setattr(bars_deltas, "atomic_write_ipc", hooked)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_qv_compact_removes_what_a_killed_merge_left_once_stale(tmp_path: Path) -> None:
    root = tmp_path / "qv"
    stored = _store(root)
    child = subprocess.run([sys.executable, "-c", _KILLED_MERGE, str(root)], check=False)
    assert child.returncode == -signal.SIGKILL
    deltas = root / "silver" / "bars" / "timeframe=1m" / DELTA_DIR
    (left,) = deltas.glob(".tmp-merge-*")  # the killed merge's file, never renamed
    _age(left, STALE)
    fresh = deltas / ".tmp-merge-0123456789abcdef.arrow"  # as young as a live merge's
    shutil.copy(left, fresh)
    scores = root / "quality" / "scores"
    score_left = scores / ".tmp-0123456789abcdef.parquet"  # a killed score compaction
    score_left.write_bytes(b"PAR1 half-written")
    _age(score_left, STALE)

    result = CliRunner().invoke(app, ["--data-dir", str(root), "compact"])

    assert result.exit_code == 0, result.output
    assert not left.exists() and not score_left.exists()
    assert fresh.exists()  # young: a live writer may still rename it
    assert [p.name for p in root.rglob(".tmp-*")] == [fresh.name]
    assert_frame_equal(ParquetLake(root).read(SYMBOLS, M1), stored)


def test_compact_during_a_merge_keeps_the_merges_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "qv"
    stored = _store(root)
    seen: list[bool] = []
    with Platform.open(root) as p:
        lake = p.runtime.backend.bars
        assert isinstance(lake, ParquetLake)

        def compact(path: Path) -> None:
            p.runtime.maintenance.compact()
            seen.append(path.exists())

        _after_merge_writes(monkeypatch, compact)
        assert lake.merge_deltas(lake.bars_root / "timeframe=1m") == 0  # folded meanwhile
        assert seen == [True]
        assert not list(root.rglob(".tmp-*"))  # the merge removed its own file
        assert_frame_equal(lake.read(SYMBOLS, M1), stored)


def test_a_merge_whose_file_was_swept_as_stale_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "qv"
    stored = _store(root)
    real = bars_deltas.atomic_write_ipc
    swept: list[Path] = []
    lake = ParquetLake(root)
    # a merge stalled past the bound
    _after_merge_writes(
        monkeypatch,
        lambda _: swept.extend(sweep_lake(root, after_s=AFTER_S, now=time.time() + STALE)),
    )
    sources = lake.delta_files("1m")
    assert lake.merge_deltas(lake.bars_root / "timeframe=1m") == 0
    assert [p.name[: len(".tmp-merge-")] for p in swept] == [".tmp-merge-"]
    assert lake.delta_files("1m") == sources  # nothing replaced; the next merge tries again
    assert_frame_equal(lake.read(SYMBOLS, M1), stored)
    monkeypatch.setattr(bars_deltas, "atomic_write_ipc", real)
    assert lake.merge_deltas(lake.bars_root / "timeframe=1m") == len(sources) - 1


def test_sweep_lake_takes_only_stale_temporary_files(tmp_path: Path) -> None:
    keep = [tmp_path / ".hidden", tmp_path / "a" / "data.parquet", tmp_path / "a" / ".tmp-new"]
    go = [tmp_path / ".tmp-x.json", tmp_path / "a" / "b" / ".tmp-fold-0123-data.arrow"]
    for path in keep + go:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / ".tmp-dir").mkdir()  # the lake writes no temporary directories
    for path in [*keep[:2], *go, tmp_path / ".tmp-dir"]:
        _age(path, STALE)

    assert sweep_lake(tmp_path, after_s=AFTER_S) == sorted(go)

    assert all(p.exists() for p in keep) and (tmp_path / ".tmp-dir").is_dir()
    assert not any(p.exists() for p in go)
    assert sweep_lake(tmp_path, after_s=AFTER_S) == []


def test_sweep_cold_takes_stale_temporaries_of_the_archive() -> None:
    tier = ColdTier(f"memory://sweep-{time.time_ns()}")
    tier.write("silver/bars/timeframe=1d/bucket=001/data.parquet", minute_bars(SYMBOLS, T0))
    left = f"{tier.base}/silver/bars/timeframe=1d/bucket=001/.tmp-0123456789abcdef.parquet"
    with tier.fs.open(left, "wb") as handle:
        handle.write(b"PAR1 half-uploaded")

    assert sweep_cold(tier, after_s=AFTER_S) == []  # young: an upload may be under way
    assert sweep_cold(tier, after_s=AFTER_S, now=time.time() + STALE) == [left]

    assert not tier.fs.exists(left)
    assert list(tier.listing()) == ["silver/bars/timeframe=1d/bucket=001/data.parquet"]


def test_the_sweep_bound_is_a_setting_of_qv_compact_and_the_scheduled_compaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from quantivista.runtime import Runtime
    from quantivista.services.scheduler import JOBS, JobContext

    root = tmp_path / "qv"
    _store(root)
    deltas = root / "silver" / "bars" / "timeframe=1m" / DELTA_DIR

    def leftover(name: str) -> Path:  # two minutes old: young for the default hour
        path = deltas / f".tmp-merge-{name}.arrow"
        path.write_bytes(b"half")
        _age(path, 120)
        return path

    first = leftover("0000000000000001")
    done = CliRunner().invoke(app, ["--data-dir", str(root), "compact"])
    assert done.exit_code == 0, done.output
    assert first.exists()  # the default bound (an hour) keeps it

    monkeypatch.setenv("QV_STORAGE__SWEEP_AFTER_S", "60")
    done = CliRunner().invoke(app, ["--data-dir", str(root), "compact"])
    assert done.exit_code == 0, done.output
    assert not first.exists()

    second = leftover("0000000000000002")
    settings = Settings(data_dir=root, storage=StorageSettings(sweep_after_s=60))
    with Runtime.from_settings(settings) as rt:
        context = JobContext(rt, "compaction", datetime.now(UTC), {})
        JOBS.get("compaction")(context)
    assert not second.exists()

    for bad in (0, -1):
        with pytest.raises(ValidationError, match="sweep_after_s"):
            StorageSettings(sweep_after_s=bad)
