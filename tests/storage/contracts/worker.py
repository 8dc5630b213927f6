"""Another process working on a backend's state, for the contract suites' concurrency tests.

    python worker.py '<where json>' <op> '<params json>'

It opens the backend, prints "ready", waits for a line on stdin (so that several workers
start at once), does `op` and prints its result as one JSON line.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from quantivista.config import Settings
from quantivista.model.instruments import HISTORY_SCHEMA, INSTRUMENT_SCHEMA
from quantivista.model.jobs import TaskStatus
from quantivista.model.schema import coerce_actions
from quantivista.storage.contracts import Backend

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def _open(where: dict[str, Any]) -> Backend:
    if where["kind"] == "lake":
        from quantivista.storage.lake.backend import open_lake

        return open_lake(Settings(data_dir=Path(where["data_dir"])))
    from quantivista.storage.postgres.backend import open_postgres

    settings = Settings(
        data_dir=Path(where["data_dir"]),
        storage={"backend": "postgres", "postgres_schema": where["schema"]},
        services={"postgres_dsn": where["dsn"]},
    )
    return open_postgres(settings)


def upsert_actions(backend: Backend, tag: str, count: int) -> int:
    """Upsert `count` actions of one symbol, one at a time (each a read-modify-write)."""
    for i in range(count):
        row = {
            "symbol": ["AAA"],
            "action_type": ["dividend"],
            "ex_date": [date(2000, 1, 1) + timedelta(days=i)],
            "amount": [0.1],
            "provider": [tag],
        }
        backend.actions.upsert(coerce_actions(pl.DataFrame(row)))
    return count


def merge_instruments(backend: Backend, tag: str, count: int) -> int:
    """Merge `count` instruments with a ticker each, one merge at a time."""
    for i in range(count):
        ident = f"{tag}{i:03d}"
        inst = pl.DataFrame({"instrument_id": [ident], "name": [ident]}).with_columns(
            pl.lit(None, dtype).alias(name)
            for name, dtype in INSTRUMENT_SCHEMA.items()
            if name not in ("instrument_id", "name")
        )
        hist = pl.DataFrame(
            {"instrument_id": [ident], "symbol": [ident], "valid_from": [None], "valid_to": [None]},
            schema=HISTORY_SCHEMA,
        )
        backend.instruments.merge(inst.select(INSTRUMENT_SCHEMA.names()), hist)
    return count


def claim(backend: Backend, worker: str) -> list[str]:
    """Claim tasks until none is left, finishing each; return the ids claimed."""
    claimed = []
    while (task := backend.catalog.claim_task(worker, 60.0, T0)) is not None:
        claimed.append(task.task_id)
        assert backend.catalog.finish_task(
            task.model_copy(update={"status": TaskStatus.SUCCEEDED}), worker, T0
        )
    return claimed


def main() -> None:
    where, op, params = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    backend = _open(where)
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        result = {
            "upsert_actions": upsert_actions,
            "merge_instruments": merge_instruments,
            "claim": claim,
        }[op](backend, **params)
        print(json.dumps(result), flush=True)
    finally:
        backend.close()


if __name__ == "__main__":
    main()
