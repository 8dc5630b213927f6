"""What the lake's SQLite catalogs (`catalog.sqlite`, `workflows.sqlite`) share: how a file
is opened, and one transaction.

    conn = open_writable(path, schema)        # WAL, synchronous=NORMAL, `schema` applied
    conn = open_immutable(path)               # a read-only copy: reads only
    with transaction(conn, lock, "BEGIN IMMEDIATE", "catalog operation failed", path) as db:
        db.execute(...)

Connections are in autocommit mode (`isolation_level=None`): `transaction` opens and ends
each transaction itself. WAL checkpoints run on a background thread (`checkpoints`), not in
the committing one. A write transaction must be `BEGIN IMMEDIATE` (SQLite's write lock,
taken up front), so two processes never both read and then write; waiting for the lock is
bounded by the busy timeout (`BUSY_TIMEOUT_S`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal

from quantivista.errors import StorageError
from quantivista.storage.lake.deltas import Folder
from quantivista.storage.lake.files import flocked

__all__ = [
    "BUSY_TIMEOUT_S",
    "Checkpoints",
    "checkpoints",
    "open_immutable",
    "open_writable",
    "transaction",
]

BUSY_TIMEOUT_S = 30.0
_CHECKPOINT_COMMITS = 200  # write transactions between background checkpoints


class Checkpoints:
    """Checkpoints one WAL database on a background thread (`deltas.Folder`) with its own
    connection, every `_CHECKPOINT_COMMITS` commits of this process (PASSIVE: writers and
    readers go on).

    SQLite's own checkpoint runs in the commit that fills the WAL to 1,000 pages, on the
    committing thread: a stream's quality report or audit record then took 3-7 ms instead
    of 0.3 (7 in 1,000 micro-batches), fsync included. Writers' connections turn theirs off
    (`PRAGMA wal_autocheckpoint=0`); the last connection to close checkpoints anyway."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._commits = 0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None  # the worker's
        self._worker = Folder(self._checkpoint)

    def committed(self) -> None:
        """Count a commit; ask for a checkpoint every `_CHECKPOINT_COMMITS`."""
        with self._lock:
            self._commits += 1
            if self._commits < _CHECKPOINT_COMMITS:
                return
            self._commits = 0
        self._worker.submit(self.path)

    def _checkpoint(self, path: Path) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # busy: it says so, no error


_checkpoints: dict[str, Checkpoints] = {}
_checkpoints_lock = threading.Lock()


def checkpoints(path: Path) -> Checkpoints:
    """Return the process's background checkpointer of the database at `path`."""
    key = str(path)
    with _checkpoints_lock:
        found = _checkpoints.get(key)
        if found is None:
            found = _checkpoints[key] = Checkpoints(path)
        return found


def open_writable(
    path: Path, schema: str, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
) -> sqlite3.Connection:
    """Open (or create) `path` in WAL mode and apply `schema` (raises sqlite3.Error);
    `synchronous` FULL fsyncs every commit (the operations log with `storage.fsync`)."""
    locks = path.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, check_same_thread=False, timeout=BUSY_TIMEOUT_S, isolation_level=None
    )
    # turning a new file to WAL fails at once ("database is locked") when two connections
    # try together: one opener at a time
    with flocked(locks / f"{path.stem}.lock"):
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # `Checkpoints` does it off this thread
        conn.executescript(schema)
    return conn


def open_immutable(path: Path) -> sqlite3.Connection:
    """Open an existing `path` that this process may not write (a read-only mount)."""
    uri = f"file:{path}?immutable=1"
    return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)


@contextmanager
def transaction(
    conn: sqlite3.Connection,
    lock: AbstractContextManager[Any],
    begin: str,
    what: str,
    path: Path,
) -> Iterator[sqlite3.Connection]:
    """Run the block in one transaction opened with `begin` (`BEGIN` or `BEGIN IMMEDIATE`),
    one thread at a time; a SQLite error is a StorageError saying `what`."""
    with lock:
        try:
            conn.execute(begin)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(what, path=str(path), error=str(exc)) from exc
    if begin != "BEGIN":  # a write
        checkpoints(path).committed()
