"""What the lake's SQLite catalogs (`catalog.sqlite`, `workflows.sqlite`) share: how a file
is opened, and one transaction.

    conn = open_writable(path, schema)        # WAL, synchronous=NORMAL, `schema` applied
    conn = open_immutable(path)               # a read-only copy: reads only
    with transaction(conn, lock, "BEGIN IMMEDIATE", "catalog operation failed", path) as db:
        db.execute(...)

Connections are in autocommit mode (`isolation_level=None`): `transaction` opens and ends
each transaction itself. A write transaction must be `BEGIN IMMEDIATE` (SQLite's write lock,
taken up front), so two processes never both read and then write; waiting for the lock is
bounded by the busy timeout (`BUSY_TIMEOUT_S`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from quantivista.errors import StorageError
from quantivista.storage.lake.files import flocked

__all__ = ["BUSY_TIMEOUT_S", "open_immutable", "open_writable", "transaction"]

BUSY_TIMEOUT_S = 30.0


def open_writable(path: Path, schema: str) -> sqlite3.Connection:
    """Open (or create) `path` in WAL mode and apply `schema` (raises sqlite3.Error)."""
    locks = path.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, check_same_thread=False, timeout=BUSY_TIMEOUT_S, isolation_level=None
    )
    # turning a new file to WAL fails at once ("database is locked") when two connections
    # try together: one opener at a time
    with flocked(locks / f"{path.stem}.lock"):
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(schema)
    return conn


def open_immutable(path: Path) -> sqlite3.Connection:
    """Open an existing `path` that this process may not write (a read-only mount)."""
    uri = f"file:{path}?immutable=1"
    return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)


@contextmanager
def transaction(
    conn: sqlite3.Connection, lock: threading.Lock, begin: str, what: str, path: Path
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
