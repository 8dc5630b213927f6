"""The reporting-side ingestion API over a real socket: sources, rules, jobs, quality, lineage,
and no tenant reading, syncing or looking up another tenant's anything."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.conftest import LiveApi, live_api, make_client
from quantivista.config import Settings
from quantivista.reporting.simulate import simulate_workflows

ROWS = 300


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveApi, Settings, Path]]:
    root = tmp_path_factory.mktemp("ingestion-api")
    settings = Settings(data_dir=root / "qv")
    files = root / "workflows"
    simulate_workflows(files, seed=5, rows=ROWS, error_rate=0.05)
    with live_api(settings) as api:
        yield api, settings, files


def client(api: LiveApi, settings: Settings, tenant: str) -> httpx.Client:
    creds = make_client(settings, tenant, "read:bars,write:ingest")
    return api.client(headers={"X-API-Key": creds.api_key})


def wait(http: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = http.get(f"/api/v1/ingestion/jobs/{job_id}/status").json()
        if job["status"] not in ("pending", "running"):
            return dict(job)
        time.sleep(0.05)
    raise AssertionError("the job did not finish")


REQUEST = {
    "source_id": "executions", "source_type": "TRADE_EXECUTION", "ingestion_mode": "ON_DEMAND",
    "data_format": "PARQUET", "target_table": "execution_data_lake",
    "transformation_rules": [
        {"rule_id": "price", "rule_type": "cast", "source_field": "execution_price",
         "transformation_logic": "float64"},
        {"rule_id": "utc", "rule_type": "timezone", "source_field": "execution_time",
         "transformation_logic": "America/New_York"},
    ],
    "quality_checks": [
        {"check_id": "id", "check_type": "not_null", "field": "trade_id"},
        {"check_id": "once", "check_type": "unique", "field": "trade_id"},
    ],
}  # fmt: skip


def test_a_job_runs_end_to_end_and_other_tenants_see_none_of_it(
    running: tuple[LiveApi, Settings, Path],
) -> None:
    api, settings, files = running
    with client(api, settings, "acme") as acme, client(api, settings, "globex") as globex:
        body = REQUEST | {"location": str(files / "executions.parquet")}
        submitted = acme.post("/api/v1/ingestion/jobs", json=body)
        assert submitted.status_code == 202, submitted.text
        job = wait(acme, submitted.json()["job_id"])
        assert job["status"] == "partial"
        assert job["records_processed"] + job["records_failed"] == ROWS
        assert job["rule_versions"] == {"price": 1, "utc": 1}
        quality = acme.get(f"/api/v1/ingestion/jobs/{job['job_id']}/quality").json()
        assert quality["total_records"] == ROWS
        assert quality["invalid_records"] == job["records_failed"]
        assert "trade_id" in quality["data_profiling"]["columns"]
        lineage = acme.get(f"/api/v1/ingestion/jobs/{job['job_id']}/lineage").json()
        assert len(lineage["inputs"][0]["sha256"]) == 64
        held = acme.get(f"/api/v1/ingestion/jobs/{job['job_id']}/dead-letters").json()
        assert len(held) == job["records_failed"]

        synced = acme.post("/api/v1/ingestion/sources/executions/sync")
        assert synced.status_code == 202
        second = wait(acme, synced.json()["job_id"])
        assert second["records_processed"] == job["records_processed"]
        assert [s["source_id"] for s in acme.get("/api/v1/ingestion/sources").json()] == [
            "executions"
        ]

        # the other tenant: every read, sync and lookup of acme's things is a 404
        job_id = job["job_id"]
        for method, path in [
            ("GET", f"/api/v1/ingestion/jobs/{job_id}/status"),
            ("GET", f"/api/v1/ingestion/jobs/{job_id}/quality"),
            ("GET", f"/api/v1/ingestion/jobs/{job_id}/lineage"),
            ("GET", f"/api/v1/ingestion/jobs/{job_id}/dead-letters"),
            ("GET", "/api/v1/ingestion/sources/executions"),
            ("POST", "/api/v1/ingestion/sources/executions/sync"),
            ("POST", "/api/v1/ingestion/sources/executions/disable"),
            ("POST", "/api/v1/ingestion/sources/executions/replay"),
            ("PUT", "/api/v1/ingestion/sources/executions"),
            ("GET", "/api/v1/ingestion/rules/price"),
            ("DELETE", "/api/v1/ingestion/rules/price"),
        ]:
            reply = globex.request(method, path, json={} if method == "PUT" else None)
            assert reply.status_code == 404, (method, path, reply.text)
        assert globex.get("/api/v1/ingestion/sources").json() == []
        assert globex.get("/api/v1/ingestion/jobs").json() == []
        assert globex.get("/api/v1/ingestion/rules").json() == []
        # and acme's source is untouched by those attempts
        assert acme.get("/api/v1/ingestion/sources/executions").json()["enabled"] is True
        assert acme.get("/api/v1/ingestion/rules/price").json()["version"] == 1


def test_bad_rules_are_refused_with_the_reason_and_rules_are_versioned(
    running: tuple[LiveApi, Settings, Path],
) -> None:
    api, settings, _ = running
    with client(api, settings, "initech") as http:
        bad = http.post(
            "/api/v1/ingestion/rules",
            json={"rule_id": "d", "rule_type": "derive", "target_field": "x",
                  "transformation_logic": "qty * missing", "fields": {"qty": "int64"}},
        )  # fmt: skip
        assert bad.status_code == 422
        assert bad.json()["context"]["rule_id"] == "d"
        assert 'unable to find column "missing"' in bad.json()["context"]["reason"]
        syntax = http.post(
            "/api/v1/ingestion/rules",
            json={"rule_id": "d", "rule_type": "filter", "transformation_logic": "qty >>> ("},
        )
        assert syntax.status_code == 422 and "not a Polars SQL expression" in syntax.text
        rule = {"rule_id": "d", "rule_type": "derive", "target_field": "x",
                "transformation_logic": "qty * 2"}  # fmt: skip
        assert http.post("/api/v1/ingestion/rules", json=rule).json()["version"] == 1
        changed = http.put(
            "/api/v1/ingestion/rules/d", json=rule | {"transformation_logic": "qty * 3"}
        )
        assert changed.json()["version"] == 2
        assert http.delete("/api/v1/ingestion/rules/d").json()["enabled"] is False
        versions = http.get("/api/v1/ingestion/rules/d/versions").json()
        assert [v["version"] for v in versions] == [1, 2, 3]
        assert http.get("/api/v1/ingestion/rules/d?version=1").json()["transformation_logic"] == (
            "qty * 2"
        )
        source = {"source_id": "s", "source_type": "EXTERNAL_FEEDS", "ingestion_mode":
                  "BATCH_SCHEDULED", "data_format": "CSV", "schedule": "not cron"}  # fmt: skip
        refused = http.post("/api/v1/ingestion/sources", json=source)
        assert refused.status_code == 422 and "cron" in refused.text
        made = http.post("/api/v1/ingestion/sources", json=source | {"schedule": "0 6 * * 1-5"})
        assert made.status_code == 201 and made.json()["tenant_id"] == "initech"
        wrong = http.put("/api/v1/ingestion/sources/s", json={"enabled": "maybe", "data_format": 3})
        assert wrong.status_code == 422
        assert "enabled" in wrong.json()["detail"] and "data_format" in wrong.json()["detail"]
        updated = http.put("/api/v1/ingestion/sources/s", json={"schedule": "30 6 * * 1-5"})
        assert updated.json()["schedule"] == "30 6 * * 1-5"
        assert http.post("/api/v1/ingestion/sources/s/disable").json()["enabled"] is False
        assert http.post("/api/v1/ingestion/sources/s/sync").status_code == 422  # disabled
