"""PostgreSQL specifics: migrations, partitions on demand, binary COPY, the platform switch."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from conftest import MakeBars
from quantivista.config import Settings
from quantivista.model.timeframe import Timeframe
from quantivista.platform import Platform
from quantivista.storage.postgres.bars import PostgresStore
from quantivista.storage.postgres.copy import encode_binary_copy


def test_migrations_run_once_and_reopening_is_a_no_op(
    postgres_dsn: str, pg_store: PostgresStore, pg_schema: str
) -> None:
    again = PostgresStore(postgres_dsn, pg_schema, pool_size=1)
    again.close()
    with psycopg.connect(postgres_dsn) as conn:
        version = conn.execute(f'SELECT version_num FROM "{pg_schema}".alembic_version').fetchall()
        layout = conn.execute(f'SELECT value FROM "{pg_schema}".qv_meta').fetchone()
        # migration 0004: the operations log exists before anything opens it
        opslog = conn.execute(f"SELECT to_regclass('\"{pg_schema}\".audit_log')").fetchone()
    from alembic.script import ScriptDirectory

    from quantivista.storage.postgres.bars import _alembic_config

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None and version == [(head,)]  # every shipped migration ran, once
    assert opslog is not None and opslog[0] is not None
    assert pg_store.layout == "partitioned" and layout == ("partitioned",)  # no TimescaleDB here


def test_year_partitions_are_created_on_demand(
    pg_store: PostgresStore, make_bars: MakeBars
) -> None:
    bars = pl.concat([make_bars(1, 3, start="2019-03-01"), make_bars(1, 3, start="2021-06-01")])
    pg_store.upsert(bars)
    with pg_store.pool.connection() as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'bars'::regclass ORDER BY 1"
        ).fetchall()
    names = {r[0] for r in rows}
    assert {"bars_y2019", "bars_y2021"} <= names
    assert pg_store.read(["SYM0"], Timeframe.parse("1d")).height == 6


def test_a_load_into_new_years_builds_keyed_partitions_in_one_transaction(
    postgres_dsn: str, pg_schema: str, make_bars: MakeBars
) -> None:
    store = PostgresStore(postgres_dsn, f"{pg_schema}_fresh", pool_size=1)
    try:
        first = make_bars(2, 3, start="2016-03-01")
        store.upsert(first)  # 2016 is new: loaded into a new table, keyed, attached
        # one batch over a year that exists and two that do not
        mixed = pl.concat(
            [make_bars(2, 3, start="2016-06-01"), make_bars(2, 3, start="2017-12-28")]
        ).sort("symbol", "ts")
        assert store.upsert(mixed).inserted == 12
        d1 = Timeframe.parse("1d")
        assert_frame_equal(
            store.read(["SYM0", "SYM1"], d1), pl.concat([first, mixed]).sort("symbol", "ts")
        )
        with store.pool.connection() as conn:
            keyed = conn.execute(
                "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid"
                " WHERE x.indisprimary AND c.relname LIKE 'bars_y%'"
                " AND c.relnamespace = current_schema()::regnamespace ORDER BY 1"
            ).fetchall()
        assert [r[0] for r in keyed] == ["bars_y2016", "bars_y2017", "bars_y2018"]
        assert store.upsert(mixed).unchanged == 12  # the key is there: an idempotent upsert
        # a repeated key in a new year fails the fast path, and the merge keeps the last
        late = make_bars(1, 2, start="2020-03-02")
        twice = pl.concat([late, late.with_columns(close=pl.col("close") + 1)])
        assert store.upsert(twice).inserted == 2
        got = store.read(["SYM0"], d1, start=datetime(2020, 1, 1, tzinfo=UTC))
        assert got["close"].to_list() == (late["close"] + 1).to_list()
    finally:
        store.close()


_text = st.one_of(  # what a polars string can hold: UTF-8, and PostgreSQL text: no NUL
    st.none(), st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6)
)
_float = st.one_of(st.none(), st.floats(allow_nan=False, width=64))
_int = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))
_ts = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(_text, _float, _int, _ts), max_size=30))
def test_binary_copy_round_trips_any_values(
    postgres_dsn: str, rows: list[tuple[object, ...]]
) -> None:
    schema = {"s": pl.String(), "f": pl.Float64(), "i": pl.Int64(), "t": pl.Datetime("us", "UTC")}
    df = pl.DataFrame(rows, schema=schema, orient="row")
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE TEMP TABLE rt (n int8, s text, f float8, i int8, t timestamptz)")
        with conn.cursor().copy("COPY rt FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(
                encode_binary_copy(df.with_row_index("n").with_columns(pl.col("n").cast(pl.Int64)))
            )
        back = conn.execute("SELECT s, f, i, t FROM rt ORDER BY n").fetchall()
    assert pl.DataFrame(back, schema=schema, orient="row").equals(df)


def test_platform_picks_the_postgres_backend(
    postgres_dsn: str, pg_schema: str, tmp_path: Path, make_bars: MakeBars
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage={"backend": "postgres", "postgres_schema": pg_schema + "_platform"},
        services={"postgres_dsn": postgres_dsn},
    )
    with Platform.from_settings(settings) as p:
        assert isinstance(p.runtime.backend.bars, PostgresStore)
        bars = make_bars(["AAA"], 5).drop("ingested_at", "job_id", "provider")
        report = p.write_bars(bars, source="vendor")
        assert report.invalid_records == 0
        out = p.bars("AAA", start="2024-01-01", end="2024-01-31")
        assert_frame_equal(out.select("ts", "close"), bars.select("ts", "close"))
        assert p.bars("AAA", as_of="2000-01-01").is_empty()


def test_copy_stream_in_chunks_equals_one_piece() -> None:
    from datetime import UTC, datetime

    from quantivista.model.schema import coerce_bars
    from quantivista.storage.postgres.copy import binary_copy_chunks, encode_binary_copy

    n = 7
    bars = coerce_bars(
        {
            "symbol": ["AAA"] * n,
            "ts": [datetime(2024, 1, d + 1, tzinfo=UTC) for d in range(n)],
            "open": [1.0] * n,
            "high": [2.0] * n,
            "low": [0.5] * n,
            "close": [1.5] * n,
            "volume": [10.0] * n,
        },
        timeframe="1d",
        provider="p",
        job_id="j",
    )
    pieces = list(binary_copy_chunks(bars, rows=3))
    assert len(pieces) == 2 + 3  # header, three chunks of at most 3 rows, trailer
    assert b"".join(pieces) == encode_binary_copy(bars)
