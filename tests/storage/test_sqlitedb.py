"""The lake's SQLite files checkpoint their WAL on a background thread (`sqlitedb`)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from quantivista.storage.lake import sqlitedb
from quantivista.storage.lake.sqlitedb import open_writable, transaction

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT);"


def _write(conn: sqlite3.Connection, path: Path, n: int) -> None:
    lock = threading.Lock()
    for _ in range(n):
        with transaction(conn, lock, "BEGIN IMMEDIATE", "write failed", path) as db:
            db.execute("INSERT INTO t (v) VALUES (?)", ("x" * 2000,))


def test_commits_never_checkpoint_but_the_background_thread_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlitedb, "_CHECKPOINT_COMMITS", 10)
    monkeypatch.setattr(sqlitedb, "_checkpoints", {})
    path = tmp_path / "c.sqlite"
    conn = open_writable(path, SCHEMA)
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    size = path.stat().st_size
    _write(conn, path, 9)  # below the count: nothing copied into the database file
    assert path.stat().st_size == size
    _write(conn, path, 1)  # the tenth: the background thread checkpoints
    deadline = time.monotonic() + 10
    while path.stat().st_size == size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.stat().st_size > size + 9 * 2000  # the rows are in the database file now
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 10
    conn.close()
