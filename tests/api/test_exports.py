"""Bulk exports over a real socket: a job, its status, its file; tenants kept apart."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import polars as pl
import psycopg
import pyarrow as pa
import pytest

from api.conftest import SYMBOLS, LiveApi, bearer, live_api, make_client
from quantivista.config import Settings
from quantivista.platform import Platform


def _finished(http: Any, export_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        state = http.get(f"/api/v1/exports/{export_id}").json()
        if state["status"] != "running":
            return dict(state)
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_an_export_is_written_and_downloaded_in_each_format(api: LiveApi, store: Settings) -> None:
    creds = make_client(store, "acme", "read:bars")
    with api.client(headers=bearer(api, creds)) as http:
        for fmt in ("parquet", "arrow", "csv"):
            made = http.post("/api/v1/exports", json={"symbols": SYMBOLS, "format": fmt,
                                                      "adjust": "all"})  # fmt: skip
            assert made.status_code == 202, made.text
            done = _finished(http, made.json()["export_id"])
            assert done["status"] == "succeeded" and done["rows"] == 3 * 502
            body = http.get(f"/api/v1/exports/{done['export_id']}/download")
            assert body.status_code == 200
            if fmt == "parquet":
                frame = pl.read_parquet(io.BytesIO(body.content))
            elif fmt == "arrow":
                frame = pl.DataFrame(pl.from_arrow(pa.ipc.open_stream(body.content).read_all()))
            else:
                frame = pl.read_csv(io.BytesIO(body.content))
            assert frame.height == 3 * 502 and sorted(frame["symbol"].unique()) == sorted(SYMBOLS)


def test_another_tenant_cannot_see_or_download_an_export(api: LiveApi, store: Settings) -> None:
    acme = make_client(store, "acme", "read:bars")
    other = make_client(store, "initech", "read:bars")
    with api.client(headers=bearer(api, acme)) as http:
        export_id = http.post("/api/v1/exports", json={"symbols": [SYMBOLS[0]]}).json()["export_id"]
        _finished(http, export_id)
    with api.client(headers=bearer(api, other)) as http:
        assert http.get(f"/api/v1/exports/{export_id}").status_code == 404
        assert http.get(f"/api/v1/exports/{export_id}/download").status_code == 404


def test_exports_go_to_an_object_store_any_api_host_can_serve(
    store: Settings, s3_endpoint: str
) -> None:
    import boto3

    from conftest import s3_bucket

    bucket = s3_bucket(s3_endpoint)
    client = {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    options = {"key": "test", "secret": "test", "client_kwargs": client}
    api = store.api.model_copy(
        update={"exports_url": f"s3://{bucket}/exports", "exports_options": options}
    )
    shared = store.model_copy(update={"api": api})
    creds = make_client(store, "acme", "read:bars")
    with live_api(shared) as one, live_api(shared) as two:
        with one.client(headers=bearer(one, creds)) as http:
            made = http.post("/api/v1/exports", json={"symbols": SYMBOLS[:2], "format": "parquet"})
            done = _finished(http, made.json()["export_id"])
        assert done["status"] == "succeeded", done
        with two.client(headers=bearer(two, creds)) as http:  # another host serves the file
            body = http.get(f"/api/v1/exports/{done['export_id']}/download")
    assert body.status_code == 200 and int(body.headers["content-length"]) == done["bytes"]
    frame = pl.read_parquet(io.BytesIO(body.content))
    assert frame.height == done["rows"] == 2 * 502
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test",
                              aws_secret_access_key="test", region_name="us-east-1")
        .list_objects_v2(Bucket=bucket)["Contents"]
    ]  # fmt: skip
    assert keys == [f"exports/{done['export_id']}.parquet"]
    assert not (store.data_dir / "exports" / f"{done['export_id']}.parquet").exists()


@pytest.mark.postgres
def test_with_workers_enabled_an_export_is_a_job_a_worker_runs(
    tmp_path: Path, postgres_dsn: str
) -> None:
    schema = f"qv_test_exports_{uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path / "qv",
        storage={"backend": "postgres", "postgres_schema": schema, "postgres_pool_size": 3},
        services={"postgres_dsn": postgres_dsn},
        workers={"enabled": True, "poll_s": 0.05},
    )
    try:
        with Platform.from_settings(settings) as p:
            p.ingest(SYMBOLS[:2], "2024-01-01", "2024-03-31")
            expected = p.bars(SYMBOLS[:2], "2024-01-01", "2024-03-31")
        acme = make_client(settings, "acme", "read:bars")
        other = make_client(settings, "initech", "read:bars")
        with live_api(settings) as api, api.client(headers=bearer(api, acme)) as http:
            request = {"symbols": SYMBOLS[:2], "start": "2024-01-01", "end": "2024-03-31"}
            made = http.post("/api/v1/exports", json=request)
            assert made.status_code == 202, made.text
            export_id, job_id = made.json()["export_id"], made.json()["job_id"]
            time.sleep(0.5)
            assert http.get(f"/api/v1/exports/{export_id}").json()["status"] == "running"
            job = http.get(f"/api/v1/jobs/{job_id}").json()  # queued, not run by the API
            assert (job["kind"], job["queue"], job["status"]) == ("export", "default", "pending")
            with Platform.from_settings(settings) as p:
                worker = p.runtime.worker(probe_port=0).start()
                try:
                    done = p.runtime.ingestion.wait(job_id, timeout_s=60, poll_s=0.05)
                finally:
                    worker.stop()
                    worker.wait()
            assert done.status.value == "succeeded" and done.records_processed == expected.height
            state = http.get(f"/api/v1/exports/{export_id}").json()
            assert state["status"] == "succeeded" and state["rows"] == expected.height
            body = http.get(f"/api/v1/exports/{export_id}/download")
            assert body.status_code == 200
            frame = pl.read_parquet(io.BytesIO(body.content))
            assert frame.select(expected.columns).equals(expected)
            with api.client(headers=bearer(api, other)) as stranger:
                assert stranger.get(f"/api/v1/exports/{export_id}").status_code == 404
                assert stranger.get(f"/api/v1/exports/{export_id}/download").status_code == 404
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_the_jobs_list_keeps_exports_apart_by_kind(api: LiveApi, store: Settings) -> None:
    admin = make_client(store, "acme", "read:bars,admin")
    with api.client(headers=bearer(api, admin)) as http:
        made = http.post("/api/v1/exports", json={"symbols": [SYMBOLS[0]]}).json()
        _finished(http, made["export_id"])
        listed = {kind: http.get("/api/v1/jobs", params={"kind": kind} if kind else {}).json()
                  for kind in (None, "export", "all")}  # fmt: skip
        bad = http.get("/api/v1/jobs", params={"kind": "no such!"})
    default, exports, every = (listed[k] for k in (None, "export", "all"))
    assert default and {j["kind"] for j in default} == {"ingest"}  # the store's own ingestion
    assert made["job_id"] in {j["job_id"] for j in exports} - {j["job_id"] for j in default}
    assert {j["kind"] for j in exports} == {"export"}
    assert {j["job_id"] for j in default} | {j["job_id"] for j in exports} <= {
        j["job_id"] for j in every
    }
    assert bad.status_code == 422
