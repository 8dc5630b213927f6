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
from quantivista.storage.lake.files import flocked
from quantivista.storage.workflows import SQLITE_SCHEMA, Cursor, SqlWorkflowCatalog

__all__ = ["SqliteWorkflowCatalog"]

_BUSY_TIMEOUT_S = 30.0


class SqliteWorkflowCatalog(SqlWorkflowCatalog):
    """The `WorkflowCatalog` in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        # opened on first use: a store whose reporting side is never used gets no file, and
        # commands on a read-only mount never touch it
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        """Open the database (under `_lock`) the first time it is needed."""
        if self._conn is not None:
            return self._conn
        try:
            if self.path.exists() and not os.access(self.path.parent, os.W_OK):
                self._conn = sqlite3.connect(  # a read-only mount: reads work, writes fail
                    f"file:{self.path}?immutable=1", uri=True, check_same_thread=False,
                    isolation_level=None,
                )  # fmt: skip
                return self._conn
            self.path.parent.mkdir(parents=True, exist_ok=True)
            locks = self.path.parent / ".locks"
            locks.mkdir(exist_ok=True)
            conn = sqlite3.connect(
                self.path, check_same_thread=False, timeout=_BUSY_TIMEOUT_S, isolation_level=None
            )
            with flocked(locks / f"{self.path.stem}.lock"):  # see storage.lake.catalog
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(SQLITE_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(
                "cannot open the ingestion catalog", path=str(self.path), error=str(exc)
            ) from exc
        self._conn = conn
        return conn

    def _new_id(self) -> str:
        return str(uuid4())

    @contextmanager
    def _tx(self, tenant: str | None) -> Iterator[Cursor]:
        del tenant  # every query filters by tenant itself; SQLite has no row policies
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn.cursor()
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(
                    "ingestion catalog operation failed", path=str(self.path), error=str(exc)
                ) from exc

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
