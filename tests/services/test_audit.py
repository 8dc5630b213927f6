"""The audit trail: pipeline events under the acting client, API writes with client and
tenant, CLI commands under the OS user, queries by CLI and API, and tables that refuse
UPDATE and DELETE (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import psycopg
import pytest
import uvicorn
from typer.testing import CliRunner

from quantivista.api.app import create_app
from quantivista.cli import app as cli
from quantivista.config import Settings
from quantivista.errors import StorageError
from quantivista.platform import Platform
from quantivista.runtime import Runtime
from quantivista.services.audit import Actor, acting_as, cli_actor


def _bad_row(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.with_columns(
        high=pl.when(pl.int_range(pl.len()) == 0).then(-1.0).otherwise(pl.col("high"))
    )


def _audited_writes_and_append_only(runtime: Runtime, make_bars: Any) -> None:
    with acting_as(Actor("api:client-1", "acme")):
        runtime.writes.write_bars(_bad_row(make_bars(["AUD"], sessions=3)), "audit-test", None)
    trail = runtime.audit.query()
    assert trail["action"].to_list() == ["bars.ingest", "bars.quarantine"]
    assert set(trail["actor"]) == {"api:client-1"} and set(trail["tenant"]) == {"acme"}
    assert json.loads(trail["details"][1])["rows"] == 1
    assert runtime.audit.query(action="bars.quarantine").height == 1
    assert runtime.audit.query(tenant="other").is_empty()
    for statement in ("UPDATE audit_log SET actor = 'nobody'", "DELETE FROM audit_log"):
        with pytest.raises(StorageError, match="append-only"):
            runtime.audit.log.execute(statement)
    assert runtime.audit.query()["actor"].to_list() == ["api:client-1"] * 2


def test_lake_audit_trail(tmp_path: Path, make_bars: Any) -> None:
    with Runtime(Settings(data_dir=tmp_path / "qv")) as runtime:
        _audited_writes_and_append_only(runtime, make_bars)


@pytest.mark.postgres
def test_postgres_audit_trail(tmp_path: Path, make_bars: Any, postgres_dsn: str) -> None:
    schema = f"qv_test_audit_{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path / "qv", storage={"backend": "postgres", "postgres_schema": schema}
    )  # type: ignore[arg-type]
    try:
        with Runtime(settings) as runtime:
            _audited_writes_and_append_only(runtime, make_bars)
        with Runtime(settings) as again:  # reopening keeps the log and its guards
            assert again.audit.query().height == 2
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_the_cli_audits_as_its_user_and_shows_the_trail(tmp_path: Path) -> None:
    runner = CliRunner()
    root = str(tmp_path / "qv")
    made = runner.invoke(cli, ["--data-dir", root, "auth", "create-client", "--tenant", "acme",
                               "-f", "json"])  # fmt: skip
    assert made.exit_code == 0, made.output
    client_id = json.loads(made.output)["client_id"]
    shown = runner.invoke(cli, ["--data-dir", root, "audit", "-f", "json"])
    assert shown.exit_code == 0, shown.output
    [record] = json.loads(shown.output)
    assert (record["action"], record["target"]) == ("auth.create_client", client_id)
    assert record["actor"] == cli_actor().name and record["actor"].startswith("cli:")


# -- the API ---------------------------------------------------------------------------------
@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    settings = Settings(data_dir=tmp_path / "qv")
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", settings
    server.should_exit = True
    thread.join(timeout=15)


def test_api_writes_are_audited_with_client_and_tenant(api: tuple[str, Settings]) -> None:
    url, settings = api
    with Platform.from_settings(settings) as p:
        writer = p.runtime.auth.create_client("acme", ["write:ingest", "read:bars"])
        admin = p.runtime.auth.create_client("ops", ["admin"])
    with httpx.Client(base_url=url, timeout=30) as http:
        job = http.post(
            "/api/v1/jobs",
            headers={"X-API-Key": writer.api_key},
            json={"symbols": ["AAPL"], "start": "2024-05-01", "end": "2024-05-10"},
        )
        assert job.status_code == 202, job.text
        denied = http.get("/api/v1/audit", headers={"X-API-Key": writer.api_key})
        assert denied.status_code == 403
        trail = http.get(
            "/api/v1/audit", params={"tenant": "acme"}, headers={"X-API-Key": admin.api_key}
        )
    assert trail.status_code == 200, trail.text
    [record] = [r for r in trail.json() if r["action"] == "POST /api/v1/jobs"]
    assert record["actor"] == f"api:{writer.client_id}"
    assert record["tenant"] == "acme" and record["outcome"] == "ok"
