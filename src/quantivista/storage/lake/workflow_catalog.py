"""The reporting-side ingestion catalog of the embedded platform: `workflows.sqlite`.

Same tables as PostgreSQL (see `storage.workflows`); every write is one `BEGIN IMMEDIATE`
transaction, so processes sharing the file never lose each other's rows.
"""

from __future__ import annotations

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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            locks = self.path.parent / ".locks"
            locks.mkdir(exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, check_same_thread=False, timeout=_BUSY_TIMEOUT_S, isolation_level=None
            )
            with flocked(locks / f"{self.path.stem}.lock"):  # see storage.lake.catalog
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(SQLITE_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(
                "cannot open the ingestion catalog", path=str(self.path), error=str(exc)
            ) from exc

    def _new_id(self) -> str:
        return str(uuid4())

    @contextmanager
    def _tx(self, tenant: str | None) -> Iterator[Cursor]:
        del tenant  # every query filters by tenant itself; SQLite has no row policies
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn.cursor()
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(
                    "ingestion catalog operation failed", path=str(self.path), error=str(exc)
                ) from exc

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()
