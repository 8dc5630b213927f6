"""The reporting-side ingestion catalog contract on every backend, tenant by tenant."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest

from quantivista.errors import NotFoundError
from quantivista.model.workflow import (
    DataProfile,
    DataQualityReport,
    DataSource,
    IngestionJob,
    JobStatus,
    RuleType,
    TransformationRule,
)
from quantivista.storage.contracts import Backend

from .conftest import Site

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def source(source_id: str, tenant: str, **kw: object) -> DataSource:
    fields: dict[str, object] = {
        "source_id": source_id, "tenant_id": tenant, "source_type": "TRADE_EXECUTION",
        "ingestion_mode": "BATCH_SCHEDULED", "data_format": "CSV",
        "location": "file:///x.csv", "schedule": "*/5 * * * *",
    }  # fmt: skip
    return DataSource.model_validate(fields | kw)


def rule(logic: str = "qty * 2") -> TransformationRule:
    return TransformationRule(
        rule_id="double", rule_type=RuleType.DERIVE, target_field="q2", transformation_logic=logic
    )


def test_sources_are_kept_per_tenant_and_keep_their_creation_time(backend: Backend) -> None:
    wf = backend.workflows
    wf.save_source(source("execs", "a"), T0)
    wf.save_source(source("execs", "b", target_table="execution_data_lake"), T0)
    later = wf.save_source(source("execs", "a", schedule="0 * * * *"), T0 + timedelta(hours=1))
    assert later.created_at == T0
    got = wf.source("a", "execs")
    assert (got.schedule, got.created_at, got.tenant_id) == ("0 * * * *", T0, "a")
    assert wf.source("b", "execs").target_table == "execution_data_lake"
    with pytest.raises(NotFoundError):
        wf.source("c", "execs")
    wf.save_source(source("other", "a"), T0)
    wf.set_enabled("a", "other", False)
    assert [s.source_id for s in wf.sources("a")] == ["execs", "other"]
    assert [s.source_id for s in wf.sources("a", include_disabled=False)] == ["execs"]
    assert [(s.tenant_id, s.source_id) for s in wf.sources(None, include_disabled=False)] == [
        ("a", "execs"), ("b", "execs"),
    ]  # fmt: skip
    assert wf.sync_state("a", "execs") is None
    wf.set_sync_state("a", "execs", {"cursor": "2026-12-01T00:00:00", "rows": 5})
    assert wf.sync_state("a", "execs") == {"cursor": "2026-12-01T00:00:00", "rows": 5}
    assert wf.sync_state("b", "execs") is None


def test_a_changed_rule_is_a_new_version_and_old_versions_stay(backend: Backend) -> None:
    wf = backend.workflows
    assert wf.save_rule("a", rule(), T0).version == 1
    assert wf.save_rule("a", rule(), T0).version == 1  # unchanged: no new version
    assert wf.save_rule("a", rule("qty * 3"), T0).version == 2
    assert wf.rule("a", "double").transformation_logic == "qty * 3"
    assert wf.rule("a", "double", 1).transformation_logic == "qty * 2"
    assert [r.version for r in wf.rule_history("a", "double")] == [1, 2]
    assert [(r.rule_id, r.version) for r in wf.rules("a")] == [("double", 2)]
    assert wf.rules("b") == []
    with pytest.raises(NotFoundError):
        wf.rule("b", "double")


def test_jobs_reports_dead_letters_and_lineage_stay_with_their_tenant(backend: Backend) -> None:
    wf = backend.workflows
    job = IngestionJob(job_id="j1", source_id="execs", start_time=T0, tenant_id="a",
                       rule_versions={"double": 2})  # fmt: skip
    wf.save_job(job)
    report = DataQualityReport(
        job_id="j1", total_records=3, valid_records=2, invalid_records=1, quality_score=2 / 3,
        data_profiling=DataProfile(row_count=3),
    )  # fmt: skip
    done = job.model_copy(
        update={"status": JobStatus.PARTIAL, "end_time": T0, "records_processed": 2,
                "records_failed": 1},
    )  # fmt: skip
    wf.save_job(done, report)
    assert wf.job("a", "j1") == done
    assert wf.report("a", "j1") == report
    assert [j.job_id for j in wf.jobs("a", "execs")] == ["j1"]
    for lookup in (lambda: wf.job("b", "j1"), lambda: wf.report("b", "j1")):
        with pytest.raises(NotFoundError):
            lookup()
    assert wf.jobs("b") == []

    rejected = pl.DataFrame({"record": [json.dumps({"x": 1}), "{}"], "stage": ["checks"] * 2,
                             "reason": ["failed checks: c1", "failed checks: c2"]})  # fmt: skip
    assert wf.add_dead_letters("a", "j1", "execs", rejected, T0) == 2
    held = wf.dead_letters("a", job_id="j1")
    assert held["reason"].to_list() == ["failed checks: c1", "failed checks: c2"]
    assert wf.dead_letters("b").is_empty()
    wf.mark_replayed("b", held["id"].to_list(), "j-b")  # another tenant's ids: no effect
    assert wf.dead_letters("a").height == 2
    wf.mark_replayed("a", held["id"].to_list()[:1], "j2")
    assert wf.dead_letters("a")["reason"].to_list() == ["failed checks: c2"]
    everything = wf.dead_letters("a", include_replayed=True)
    assert everything["replayed_job_id"].to_list() == ["j2", None]

    wf.add_lineage("a", [{"job_id": "j1", "source_id": "execs", "input_uri": "s3://b/k.csv",
                          "sha256": "ab" * 32, "rows": 3, "lake_table": "execution_data_lake"},
                         {"job_id": "j1", "source_id": "execs", "input_uri": "pg://t",
                          "cursor": {"after": 5}, "offset_start": 0, "offset_end": 3, "rows": 3}],
                   T0)  # fmt: skip
    lineage = wf.lineage("a", "j1")
    assert [e["input_uri"] for e in lineage] == ["s3://b/k.csv", "pg://t"]
    assert lineage[0]["sha256"] == "ab" * 32 and lineage[1]["cursor"] == {"after": 5}
    assert wf.lineage("b", "j1") == []


def test_postgres_row_level_security_shows_a_role_its_tenant_only(
    site: Site, backend: Backend
) -> None:
    if site.kind != "postgres":
        pytest.skip("row-level security is PostgreSQL's")
    wf = backend.workflows
    wf.save_source(source("execs", "a"), T0)
    wf.save_source(source("execs", "b"), T0)
    schema = site.settings.storage.postgres_schema
    dsn = site.settings.services.postgres_dsn.get_secret_value()
    role = f"{schema}_reader"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
        try:
            conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
            conn.execute(f'GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
            with conn.transaction():
                conn.execute(f'SET LOCAL ROLE "{role}"')
                conn.execute(f'SET LOCAL search_path TO "{schema}"')
                seen = lambda: conn.execute(  # noqa: E731
                    "SELECT tenant_id FROM data_sources ORDER BY 1"
                ).fetchall()
                assert seen() == []  # no tenant set: nothing
                conn.execute("SELECT set_config('qv.tenant', 'a', true)")
                assert seen() == [("a",)]
                with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                    conn.execute(
                        "INSERT INTO data_sources (tenant_id, source_id, source_type,"
                        " ingestion_mode, data_format, connection_config, body)"
                        " VALUES ('b', 'sneaky', 'x', 'y', 'z', '{}', '{}')"
                    )
        finally:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')
