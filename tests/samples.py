"""Sample rows several test modules share: quality scores, jobs and reports, instrument CSVs,
minute bars."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from quantivista.model.jobs import DataQualityReport, IngestionJob, Severity, ValidationIssue
from quantivista.model.schema import SCORE_SCHEMA, STORED_SCORE_SCHEMA

AT = datetime(2024, 3, 1, 12, tzinfo=UTC)
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def scores(
    job: str, symbols: list[str], days: int, bad: frozenset[int] | set[int] = frozenset()
) -> pl.DataFrame:
    """One row per symbol-day; the rows at the positions in `bad` are flagged or rejected."""
    rows = []
    for symbol in symbols:
        for i in range(days):
            k = len(rows)
            rejected, flagged = (1, 0) if k in bad and k % 2 else (0, 1) if k in bad else (0, 0)
            rows.append(
                {
                    "symbol": symbol, "timeframe": "1d", "date": date(2024, 1, 1) + timedelta(i),
                    "job_id": job, "rows": 1, "rejected": rejected, "flagged": flagged,
                    "missing": 1 if k in bad and k % 3 == 0 else 0,
                    "score": 1.0 - rejected - 0.5 * flagged,
                }
            )  # fmt: skip
    return pl.DataFrame(rows, schema=SCORE_SCHEMA)


def stored_scores(df: pl.DataFrame, at: datetime = AT) -> pl.DataFrame:
    """The score rows as the store reads them back."""
    out = df.with_columns(scored_at=pl.lit(at)).select(STORED_SCORE_SCHEMA.names())
    return out.cast(STORED_SCORE_SCHEMA).sort("symbol", "timeframe", "date", "scored_at")


def job(job_id: str, start: datetime | None = T0, **kw: Any) -> IngestionJob:
    return IngestionJob(job_id=job_id, source_id="synthetic", start_time=start, **kw)


def report(job_id: str, score: float = 0.9) -> DataQualityReport:
    return DataQualityReport(
        job_id=job_id,
        total_records=10,
        valid_records=9,
        invalid_records=1,
        quality_score=score,
        validation_errors=[
            ValidationIssue(
                symbol="AAA", ts=T0, rule="negative_volume", severity=Severity.ERROR, message="m"
            )
        ],
        rule_counts={"negative_volume": 1},
        issue_count=1,
    )


INSTRUMENTS = """\
instrument_id,name,asset_class,currency,exchange,isin,cusip,figi,sector,listed,delisted
META,Meta Platforms,equity,USD,XNAS,US30303M1027,30303M102,BBG000MM2P62,Communication Services,2012-05-18,
WAMU,Washington Mutual,equity,USD,XNYS,,,,Financials,1990-01-02,2008-09-26
WMGT,Waste Management,equity,USD,XNYS,US94106L1098,94106L109,,Industrials,1998-01-02,
AAPL,Apple,equity,USD,XNAS,US0378331005,037833100,BBG000B9XRY4,Technology,1980-12-12,
"""  # noqa: E501 (CSV rows)
HISTORY = """instrument_id,symbol,valid_from,valid_to
META,FB,2012-05-18,2022-06-08
META,META,2022-06-09,
WAMU,WM,1990-01-02,2008-09-26
WMGT,UW,1998-01-02,1998-07-16
WMGT,WMI,1998-07-17,2009-08-04
WMGT,WM,2009-08-05,
AAPL,AAPL,1980-12-12,
"""


def minute_bars(symbols: list[str], ts: datetime) -> pl.DataFrame:
    """One bar of each of `symbols` at minute `ts` (a streaming micro-batch)."""
    close = np.linspace(50, 60, len(symbols))
    return pl.DataFrame(
        {
            "symbol": symbols,
            "ts": [ts] * len(symbols),
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": np.full(len(symbols), 100.0),
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
