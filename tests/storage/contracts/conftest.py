"""The contract suites' fixtures: every kind of state on every backend.

`site` names where a backend keeps its state (a lake directory, or the session's PostgreSQL
schema emptied for the test); `site.open()` opens one more backend on the same state (for
PostgreSQL with its own pool, like another process would), and `site.worker(...)` starts
another process working on it (see `worker.py`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from procs import reap
from quantivista.config import Settings
from quantivista.storage.contracts import Backend
from quantivista.storage.lake.backend import open_lake
from quantivista.storage.postgres.bars import PostgresStore

WORKER = Path(__file__).with_name("worker.py")

# every table a test may write, emptied before each PostgreSQL test
PG_TABLES = (
    "bars", "bars_history", "actions", "quarantine_rows", "quarantine_released",
    "quality_scores", "raw_payloads", "raw_manifest", "instruments", "symbol_history",
    "jobs", "job_tasks", "quality_reports", "dead_letters", "state",
    "data_sources", "transformation_rules", "ingestion_jobs", "ingestion_dead_letters",
    "ingestion_lineage",
)  # fmt: skip


class Site:
    """Where one backend keeps its state, and how to reach it again."""

    def __init__(self, kind: str, settings: Settings) -> None:
        self.kind = kind
        self.settings = settings
        self.opened: list[Backend] = []
        self._fresh = 0

    def __repr__(self) -> str:
        return f"Site({self.kind!r})"

    def open(self) -> Backend:
        """Open one more backend on this state (closed when the test ends)."""
        if self.kind == "lake":
            backend = open_lake(self.settings)
        else:
            from quantivista.storage.postgres.backend import open_postgres

            backend = open_postgres(self.settings)
        self.opened.append(backend)
        return backend

    def fresh(self, *tables: str) -> Backend:
        """Return an empty backend again (for each example of a hypothesis test).

        The lake: a new directory beside the first; PostgreSQL: `tables` (default: all)
        emptied.
        """
        if self.kind == "lake":
            self._fresh += 1
            root = self.settings.data_dir.with_name(f"{self.settings.data_dir.name}-{self._fresh}")
            backend = open_lake(self.settings.with_data_dir(root))
            self.opened.append(backend)
            return backend
        backend = self.opened[0] if self.opened else self.open()
        pool = backend.bars.pool  # type: ignore[attr-defined]
        with pool.connection() as conn:
            for table in tables or PG_TABLES:
                conn.execute(f"DELETE FROM {table}")
        return backend

    def worker(self, op: str, **params: Any) -> subprocess.Popen[str]:
        """Start `worker.py` doing `op` on this state in another process."""
        where = {
            "kind": self.kind,
            "data_dir": str(self.settings.data_dir),
            "schema": self.settings.storage.postgres_schema,
            "dsn": self.settings.services.postgres_dsn.get_secret_value(),
        }
        return subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(where), op, json.dumps(params)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def run_together(*workers: subprocess.Popen[str]) -> list[Any]:
    """Let started workers go at once (each waits for a line on stdin); return their results."""
    try:
        return _run_together(workers)
    finally:  # a failed one leaves the others running with open pipes otherwise
        for w in workers:
            reap(w)


def _run_together(workers: tuple[subprocess.Popen[str], ...]) -> list[Any]:
    for w in workers:
        assert w.stdout is not None
        line = w.stdout.readline()  # "ready": imported and connected
        if line.strip() != "ready":
            _, err = w.communicate()
            raise AssertionError(f"worker did not start: {line!r} {err}")
    results = []
    outs = []
    for w in workers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        outs.append(out)
    for out in outs:
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _pg_settings(root: Path, dsn: str, schema: str) -> Settings:
    return Settings(
        data_dir=root,
        storage={"backend": "postgres", "postgres_schema": schema, "postgres_pool_size": 4},
        services={"postgres_dsn": dsn},
    )


@pytest.fixture
def pg_backend_site(tmp_path: Path, pg_store_session: PostgresStore, postgres_dsn: str) -> Site:
    """Return the session's PostgreSQL schema with every table emptied."""
    with pg_store_session.pool.connection() as conn:
        conn.execute(f"TRUNCATE {', '.join(PG_TABLES)} RESTART IDENTITY")
        conn.execute("UPDATE versions SET version = version + 1")
    return Site(
        "postgres", _pg_settings(tmp_path / "pg-data", postgres_dsn, pg_store_session.schema)
    )


@pytest.fixture
def lake_site(tmp_path: Path) -> Site:
    """Return an empty lake directory."""
    return Site("lake", Settings(data_dir=tmp_path / "lake", storage={"write_threads": 1}))


@pytest.fixture(params=["lake", "postgres"])
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    """Return empty state of each backend in turn; close what the test opened on it."""
    name = "lake_site" if request.param == "lake" else "pg_backend_site"
    chosen: Site = request.getfixturevalue(name)
    yield chosen
    for backend in chosen.opened:
        backend.close()


@pytest.fixture
def backend(site: Site) -> Backend:
    """Return a backend of each kind in turn, empty."""
    return site.open()


@pytest.fixture
def twins(lake_site: Site, pg_backend_site: Site) -> Iterator[tuple[Backend, Backend]]:
    """Return an empty lake backend and an empty PostgreSQL backend, to compare."""
    pair = (lake_site.open(), pg_backend_site.open())
    yield pair
    for site in (lake_site, pg_backend_site):
        for opened in site.opened:
            opened.close()
