"""The reporting-side ingestion catalog of the embedded platform: `workflows.sqlite`.

Same tables as PostgreSQL (see `storage.workflows`); every write is one `BEGIN IMMEDIATE`
transaction, so processes sharing the file never lose each other's rows.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

from quantivista.errors import StorageError
from quantivista.storage.lake.sqlitedb import open_immutable, open_writable, transaction
from quantivista.storage.workflows import SQLITE_SCHEMA, Cursor, SqlWorkflowCatalog

__all__ = ["SqliteWorkflowCatalog"]


class SqliteWorkflowCatalog(SqlWorkflowCatalog):
    """The `WorkflowCatalog` in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        parent = self.path.parent
        # a data directory we may not write to (a read-only mount, a shared copy): reads
        # work, writes fail with a StorageError (see storage.lake.catalog)
        self.read_only = parent.exists() and not os.access(parent, os.W_OK)
        try:
            if self.read_only:
                self._conn = self._read_only()
                return
            self._conn = open_writable(self.path, SQLITE_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(
                "cannot open the ingestion catalog", path=str(self.path), error=str(exc)
            ) from exc

    def _read_only(self) -> sqlite3.Connection:
        if self.path.exists():
            return open_immutable(self.path)
        conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        conn.executescript(SQLITE_SCHEMA)  # nothing was ever ingested here: empty tables
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _new_id(self) -> str:
        return str(uuid4())

    @contextmanager
    def _tx(self, tenant: str | None) -> Iterator[Cursor]:
        del tenant  # every query filters by tenant itself; SQLite has no row policies
        begin = "BEGIN" if self.read_only else "BEGIN IMMEDIATE"
        what = "ingestion catalog operation failed"
        with transaction(self._conn, self._lock, begin, what, self.path) as conn:
            yield conn.cursor()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()
