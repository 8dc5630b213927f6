"""The embedded operations log: durability as the lake's, no record lost to a killed process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quantivista.config import Settings, StorageSettings
from quantivista.services.audit import open_opslog
from quantivista.storage.backend import open_backend
from quantivista.storage.lake.opslog import SqliteOpsLog


def _synchronous(log: SqliteOpsLog) -> int:
    return int(log._conn.execute("PRAGMA synchronous").fetchone()[0])


@pytest.mark.parametrize(("fsync", "level"), [(True, 2), (False, 1)])  # FULL, NORMAL
def test_the_audit_log_fsyncs_as_the_lake_does(tmp_path: Path, fsync: bool, level: int) -> None:
    settings = Settings(data_dir=tmp_path, storage=StorageSettings(fsync=fsync))
    backend = open_backend(settings)
    try:
        log = open_opslog(settings, backend)
        assert isinstance(log, SqliteOpsLog)
        log.add_audit(datetime.now(UTC), "a", None, "bars.ingest", "job-1", "ok", {})
        assert _synchronous(log) == level
        assert log.audit()["target"].to_list() == ["job-1"]
        log.close()
    finally:
        backend.close()


_WRITER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from quantivista.storage.lake.opslog import SqliteOpsLog

log = SqliteOpsLog(Path(sys.argv[1]), fsync=False)
for i in range(100_000):
    log.add_audit(datetime.now(UTC), "a", None, "bars.ingest", f"job-{i}", "ok", {})
    print(i, flush=True)  # acknowledged: committed
"""


def test_a_killed_writer_loses_no_committed_record(tmp_path: Path) -> None:
    path = tmp_path / "ops.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 300:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    log = SqliteOpsLog(path)
    kept = log.audit(limit=1_000_000)["target"].to_list()
    assert len(kept) > acknowledged  # every acknowledged record, in order
    assert kept[: acknowledged + 1] == [f"job-{i}" for i in range(acknowledged + 1)]
    log.close()
