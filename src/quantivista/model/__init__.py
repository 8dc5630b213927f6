"""Domain types and canonical schemas."""

from quantivista.model.flags import QualityFlag
from quantivista.model.instruments import AssetClass, CorporateAction, Instrument
from quantivista.model.jobs import (
    DataQualityReport,
    IngestionJob,
    JobStatus,
    Severity,
    ValidationIssue,
)
from quantivista.model.schema import (
    ACTION_COLUMNS,
    ACTION_POLARS_SCHEMA,
    ACTION_SCHEMA,
    ACTION_TYPES,
    BAR_COLUMNS,
    BAR_KEY,
    BAR_POLARS_SCHEMA,
    BAR_SCHEMA,
    BAR_VALUE_COLUMNS,
    QUARANTINE_POLARS_SCHEMA,
    coerce_actions,
    coerce_bars,
    empty_bars,
    to_polars,
)
from quantivista.model.ticks import Quote, Trade
from quantivista.model.timeframe import Timeframe, TimeframeLike

__all__ = [
    "ACTION_COLUMNS",
    "ACTION_POLARS_SCHEMA",
    "ACTION_SCHEMA",
    "ACTION_TYPES",
    "AssetClass",
    "BAR_COLUMNS",
    "BAR_KEY",
    "BAR_POLARS_SCHEMA",
    "BAR_SCHEMA",
    "BAR_VALUE_COLUMNS",
    "CorporateAction",
    "DataQualityReport",
    "IngestionJob",
    "Instrument",
    "JobStatus",
    "QUARANTINE_POLARS_SCHEMA",
    "QualityFlag",
    "Quote",
    "Severity",
    "Timeframe",
    "TimeframeLike",
    "Trade",
    "ValidationIssue",
    "coerce_actions",
    "coerce_bars",
    "empty_bars",
    "to_polars",
]
