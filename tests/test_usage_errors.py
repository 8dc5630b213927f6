"""A caller's mistake raised by the bus or a store is permanent, not a retryable BusError or
StorageError: a consumer would otherwise redeliver it until its attempts run out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from quantivista.bus.base import check_member
from quantivista.bus.codecs import Codecs
from quantivista.bus.events import BarsIngested, Event
from quantivista.bus.memory_broker import MemoryBroker
from quantivista.bus.publisher import _Splitter
from quantivista.bus.schemas import fields_of
from quantivista.config import StorageSettings
from quantivista.errors import (
    BusError,
    BusUsageError,
    QuantiVistaError,
    StorageError,
    StorageRejectedError,
    StorageUsageError,
)
from quantivista.model.timeframe import Timeframe
from quantivista.services.distribution import DistributionService
from quantivista.storage.lake.backup import backup, restore
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.opslog import SqliteOpsLog
from quantivista.storage.lake.retention import archive_expired

T0 = datetime(2024, 1, 2, tzinfo=UTC)


class _Odd(Event):
    topic = "odd"
    value: complex  # no schema kind carries it


def _event() -> BarsIngested:
    return BarsIngested(
        occurred_at=T0, job_id="j", source="s", timeframe="1d", symbols=["A"], rows_written=1,
        rows_unchanged=0,
    )  # fmt: skip


def _old_layout(root: Path) -> Path:
    (root / "silver" / "bars" / "timeframe=1d" / "symbol=A").mkdir(parents=True)
    return root


def _full(path: Path) -> Path:
    path.mkdir()
    (path / "something").write_text("x")
    return path


BUS_MISTAKES: dict[str, Callable[[Path], Any]] = {
    "unknown-topic": lambda _: MemoryBroker().last_offset("no.such.topic"),
    "replay-unknown-topic": lambda _: DistributionService(MemoryBroker(), Codecs()).messages("no"),
    "unknown-codec": lambda _: Codecs().encode(_event(), "xml"),  # type: ignore[arg-type]
    "member-out-of-range": lambda _: check_member(3, 2),
    "unsupported-field": lambda _: fields_of(_Odd),
    "rows-without-a-symbol": lambda _: _Splitter(4)(pl.DataFrame({"symbol": ["A", None]})),
}
STORE_MISTAKES: dict[str, Callable[[Path], Any]] = {
    "no-cold-tier": lambda tmp: archive_expired(
        ParquetLake(tmp / "lake", StorageSettings()), {"1d": 1}, T0
    ),
    "backup-into-full-dir": lambda tmp: backup(tmp / "lake", _full(tmp / "dest")),
    "restore-from-nothing": lambda tmp: restore(tmp / "missing", tmp / "target"),
    "unknown-column": lambda tmp: ParquetLake(tmp / "lake", StorageSettings()).read(
        ["A"], Timeframe.parse("1d"), T0, T0, columns=["symbol", "no_such_column"]
    ),
    "old-per-symbol-layout": lambda tmp: ParquetLake(_old_layout(tmp / "lake"), StorageSettings()),
}


@pytest.mark.parametrize("mistake", BUS_MISTAKES.values(), ids=BUS_MISTAKES.keys())
def test_bus_usage_mistake_is_a_permanent_bus_error(
    tmp_path: Path, mistake: Callable[[Path], Any]
) -> None:
    with pytest.raises(BusError) as caught:
        mistake(tmp_path)
    assert type(caught.value) is BusUsageError
    assert caught.value.retryable is False and not caught.value.is_retryable()


@pytest.mark.parametrize("mistake", STORE_MISTAKES.values(), ids=STORE_MISTAKES.keys())
def test_store_usage_mistake_is_a_permanent_storage_error(
    tmp_path: Path, mistake: Callable[[Path], Any]
) -> None:
    with pytest.raises(StorageError) as caught:
        mistake(tmp_path)
    assert type(caught.value) is StorageUsageError
    assert not caught.value.is_retryable()


def test_ops_log_refusing_a_rewrite_is_rejected_but_a_locked_file_stays_retryable(
    tmp_path: Path,
) -> None:
    log = SqliteOpsLog(tmp_path / "ops.sqlite")
    log.add_audit(T0, "me", None, "act", "target", "ok", {})
    with pytest.raises(StorageRejectedError, match="append-only") as refused:
        log.execute("DELETE FROM audit_log")
    assert not refused.value.is_retryable()
    with pytest.raises(StorageError) as failed:
        log.execute("SELECT * FROM no_such_table")  # not a refusal of data: the old class
    assert not isinstance(failed.value, StorageRejectedError)
    log.close()


def test_usage_errors_sit_under_their_families_so_old_handlers_still_catch_them() -> None:
    for cls, family in ((BusUsageError, BusError), (StorageUsageError, StorageError)):
        err: QuantiVistaError = cls("x")
        assert isinstance(err, family) and not err.is_retryable()
        assert family("x").is_retryable()  # the family's default stays: the service away
