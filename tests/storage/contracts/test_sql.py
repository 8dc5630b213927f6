"""`qv sql` on every backend: the lake's relations and answers; PostgreSQL read-only, guarded."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from conftest import MakeBars
from quantivista.errors import InvalidInputError
from quantivista.model.schema import (
    ACTION_POLARS_SCHEMA,
    BAR_POLARS_SCHEMA,
    QUARANTINE_POLARS_SCHEMA,
    coerce_actions,
)
from quantivista.storage.contracts import Backend
from quantivista.storage.lake.sql import sql_query as lake_sql
from quantivista.storage.postgres.bars import PostgresStore
from quantivista.storage.postgres.sql import sql_query

from .conftest import Site

AT = datetime(2024, 6, 1, tzinfo=UTC)


def _fill(backend: Backend, make_bars: MakeBars) -> None:
    bars = make_bars(["AAA", "BBB"], 5)
    backend.bars.upsert(bars)
    backend.actions.upsert(
        coerce_actions(pl.DataFrame({"symbol": ["AAA"], "action_type": ["split"],
                                     "ex_date": ["2024-01-04"], "ratio": [2.0]}))
    )  # fmt: skip
    bad = bars.head(1).with_columns(
        symbol=pl.lit("CCC"), rule=pl.lit("r"), severity=pl.lit("error"), reason=pl.lit("x")
    )
    backend.quarantine.add(bad, job_id="job-1", at=AT)


@pytest.fixture
def pg(pg_backend_site: Site) -> PostgresStore:
    backend = pg_backend_site.open()
    assert isinstance(backend.bars, PostgresStore)
    return backend.bars


def test_relations_have_the_canonical_columns_with_or_without_rows(
    lake_site: Site, pg_backend_site: Site, make_bars: MakeBars
) -> None:
    lake, pg = lake_site.open(), pg_backend_site.open()
    canonical = {
        "bars": BAR_POLARS_SCHEMA.names(),
        "actions": ACTION_POLARS_SCHEMA.names(),
        "quarantine": QUARANTINE_POLARS_SCHEMA.names(),
    }
    for filled in (False, True):
        if filled:
            _fill(lake, make_bars)
            _fill(pg, make_bars)
        for relation, columns in canonical.items():
            query = f"SELECT * FROM {relation} LIMIT 0"
            assert lake_sql(lake_site.settings.data_dir, query).columns == columns
            assert sql_query(pg.bars.pool, query).columns == columns  # type: ignore[attr-defined]


def test_the_same_queries_give_the_same_answers(
    lake_site: Site, pg_backend_site: Site, make_bars: MakeBars
) -> None:
    lake, pg = lake_site.open(), pg_backend_site.open()
    for backend in (lake, pg):
        _fill(backend, make_bars)
    for query in (
        "SELECT symbol, count(*) AS n, min(ts) AS first FROM bars GROUP BY 1 ORDER BY 1",
        "SELECT symbol, action_type, ex_date, ratio FROM actions",
        "SELECT symbol, job_id, rule, quarantined_at FROM quarantine",
        "SELECT b.symbol, b.close FROM bars b JOIN actions a USING (symbol) ORDER BY b.ts LIMIT 2",
    ):
        assert_frame_equal(
            sql_query(pg.bars.pool, query),  # type: ignore[attr-defined]
            lake_sql(lake_site.settings.data_dir, query),
        )
    jobs = sql_query(pg.bars.pool, "SELECT count(*) AS n FROM quarantine_rows")  # type: ignore[attr-defined]
    assert jobs.item() == 1  # every table of the schema can be read


def test_results_keep_their_types_even_when_empty(pg: PostgresStore) -> None:
    out = sql_query(pg, "SELECT ts, close, trades, symbol FROM bars WHERE false")
    assert out.schema == pl.Schema(
        {"ts": pl.Datetime("us", "UTC"), "close": pl.Float64, "trades": pl.Int64,
         "symbol": pl.String}
    )  # fmt: skip
    odd = sql_query(pg, "SELECT '{\"a\": 1}'::jsonb AS j, gen_random_uuid() AS u, 1 AS x, 2 AS x")
    assert odd.columns == ["j", "u", "x", "x_1"]
    assert odd["j"].item() == '{"a": 1}' and odd.schema["u"] == pl.String


def test_errors_are_invalid_input_with_the_databases_message(pg: PostgresStore) -> None:
    with pytest.raises(InvalidInputError, match='column "nope" does not exist'):
        sql_query(pg, "SELECT nope FROM bars")
    with pytest.raises(InvalidInputError, match="multiple commands"):
        sql_query(pg, "SELECT 1; DELETE FROM bars")
    with pytest.raises(InvalidInputError, match="read-only transaction"):
        sql_query(pg, "WITH gone AS (DELETE FROM bars RETURNING 1) SELECT count(*) FROM gone")
    for write in ("DELETE FROM bars", "COPY bars TO STDOUT", "DROP TABLE bars", "SET x = 1"):
        with pytest.raises(InvalidInputError, match="only one reading statement"):
            sql_query(pg, write)
    with pytest.raises(InvalidInputError, match="statement timeout"):
        sql_query(pg, "SELECT pg_sleep(5)", timeout_s=0.2)
    assert sql_query(pg, "-- a comment\n/* another */ (SELECT 1 AS one)").item() == 1
    assert sql_query(pg, "SELECT count(*) FROM bars").item() == 0  # the pool still works


def test_allow_writes_runs_and_commits_one_statement(pg: PostgresStore) -> None:
    sql_query(pg, "INSERT INTO state (key, value) VALUES ('k', '{}')", allow_writes=True)
    assert sql_query(pg, "SELECT key FROM state").item() == "k"
    with pytest.raises(InvalidInputError, match="multiple commands"):
        sql_query(pg, "DELETE FROM state; DELETE FROM bars", allow_writes=True)
    assert sql_query(pg, "SELECT count(*) FROM state").item() == 1
