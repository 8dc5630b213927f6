"""`qv backup` / `qv restore`: a verified snapshot that restores into an empty directory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from conftest import MakeBars
from quantivista.cli import app
from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.errors import StorageError
from quantivista.platform import Platform
from quantivista.storage.lake.backup import backup, restore, verify


def test_backup_and_restore_round_trip(tmp_path: Path, make_bars: MakeBars) -> None:
    live, snap, back = tmp_path / "live", tmp_path / "snap", tmp_path / "back"
    clock = TestClock(datetime(2024, 2, 1, tzinfo=UTC))
    bars = make_bars(["AAA", "BBB"], 5).drop("ingested_at", "job_id")
    with Platform.from_settings(Settings(data_dir=live), clock=clock) as p:
        p.write_bars(bars, source="v")
        clock.advance(60)
        p.write_bars(bars.head(1).with_columns(close=pl.col("close") + 1), source="v")
        bad = bars.head(1).with_columns(symbol=pl.lit("CCC"), high=pl.col("low") - 1)
        p.write_bars(bad, source="v")
    runner = CliRunner()
    made = runner.invoke(app, ["--data-dir", str(live), "backup", str(snap)])
    assert made.exit_code == 0, made.output
    assert verify(snap)["files"]
    done = runner.invoke(app, ["--data-dir", str(back), "restore", str(snap)])
    assert done.exit_code == 0, done.output
    with Platform.open(live) as a, Platform.open(back) as b:
        assert_frame_equal(b.bars(["AAA", "BBB"]), a.bars(["AAA", "BBB"]))
        early = datetime(2024, 2, 1, 0, 0, 30, tzinfo=UTC)
        assert_frame_equal(b.bars("AAA", as_of=early), a.bars("AAA", as_of=early))  # history too
        assert b.quarantine().height == 1
        assert [j.job_id for j in b.jobs()] == [j.job_id for j in a.jobs()]
    with pytest.raises(StorageError, match="not empty"):
        restore(snap, back)
    with pytest.raises(StorageError, match="not empty"):
        backup(live, snap)


def test_a_damaged_backup_is_refused(tmp_path: Path, make_bars: MakeBars) -> None:
    with Platform.open(tmp_path / "live") as p:
        p.write_bars(make_bars(["AAA"], 3).drop("ingested_at", "job_id"), source="v")
    backup(tmp_path / "live", tmp_path / "snap")
    victim = next((tmp_path / "snap" / "silver").rglob("data.*"))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(StorageError, match="checksums"):
        restore(tmp_path / "snap", tmp_path / "back")
    assert not (tmp_path / "back").exists()  # nothing copied
