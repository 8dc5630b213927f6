"""The reporting-side Data Ingestion Service's types: sources, rules, checks, jobs, reports.

Names follow the specification (`DataIngestionRequest`, `IngestionJob`, `DataQualityReport`,
`TransformationRule`, `DataIngestedEvent`'s payload). They are apart from `model.jobs`, whose
`IngestionJob` and `DataQualityReport` belong to market-data ingestion: import this module's
types by module (`from quantivista.model import workflow`) where both meet.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "LAKE_TABLES",
    "CheckType",
    "ColumnProfile",
    "DataFormat",
    "DataIngestionRequest",
    "DataIngestedPayload",
    "DataProfile",
    "DataQualityReport",
    "DataSource",
    "DataSourceType",
    "IngestionJob",
    "IngestionMode",
    "JobStatus",
    "QualityCheck",
    "RuleType",
    "Severity",
    "TransformationRule",
    "ValidationError",
]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"

# the lake's tables a source may load into (see `storage.lake.workflow_lake`)
LAKE_TABLES = (
    "portfolio_data_lake",
    "execution_data_lake",
    "risk_metrics",
    "performance_metrics",
    "market_intelligence",
    "instrument_analytics",
)


class DataSourceType(StrEnum):
    """Which QuantiVista workflow a source's data comes from."""

    PORTFOLIO_MANAGEMENT = "PORTFOLIO_MANAGEMENT"
    TRADE_EXECUTION = "TRADE_EXECUTION"
    MARKET_INTELLIGENCE = "MARKET_INTELLIGENCE"
    INSTRUMENT_ANALYSIS = "INSTRUMENT_ANALYSIS"
    MARKET_DATA = "MARKET_DATA"
    EXTERNAL_FEEDS = "EXTERNAL_FEEDS"


class IngestionMode(StrEnum):
    """How a source is read."""

    REAL_TIME_STREAM = "REAL_TIME_STREAM"
    BATCH_SCHEDULED = "BATCH_SCHEDULED"
    ON_DEMAND = "ON_DEMAND"
    INCREMENTAL_SYNC = "INCREMENTAL_SYNC"


class DataFormat(StrEnum):
    """The wire format of a source's records."""

    JSON = "JSON"
    AVRO = "AVRO"
    PARQUET = "PARQUET"
    CSV = "CSV"
    PROTOBUF = "PROTOBUF"


class RuleType(StrEnum):
    """What a transformation rule does; `transformation_logic` means, per type:

    - rename: nothing (source_field -> target_field);
    - cast: the type (`float64`, `int64`, `string`, `bool`, `date`, `datetime`, or
      `date:<strftime format>` / `datetime:<format>` to parse text);
    - derive: a Polars SQL expression over the columns (never Python `eval`);
    - timezone: the IANA zone naive timestamps in source_field are in (`America/New_York`);
      target_field gets them in UTC;
    - scale: a number to multiply by (unit scaling: 0.01 turns cents into units);
    - filter: a Polars SQL condition; rows where it is not true are left out (counted);
    - flatten: the separator for the struct (or JSON text) in source_field's fields;
    - lookup: `<reference table>.<key column>`: join reference columns on source_field;
    - currency: `<ISO code or currency column> -> <ISO code>`: source_field converted at the
      latest rate into target_field.
    """

    RENAME = "rename"
    CAST = "cast"
    DERIVE = "derive"
    TIMEZONE = "timezone"
    SCALE = "scale"
    FILTER = "filter"
    FLATTEN = "flatten"
    LOOKUP = "lookup"
    CURRENCY = "currency"


class TransformationRule(BaseModel):
    """One step of a source's transformation; versioned (an update stores a new version)."""

    model_config = ConfigDict(frozen=True)

    rule_id: str = Field(pattern=_ID)
    rule_type: RuleType
    source_field: str | None = None
    target_field: str | None = None
    transformation_logic: str = ""
    validation_criteria: str | None = Field(
        default=None, description="a Polars SQL condition the output must meet (else 422/job error)"
    )
    version: int = Field(default=1, ge=1)
    enabled: bool = True


class CheckType(StrEnum):
    """Declarative quality checks."""

    NOT_NULL = "not_null"
    UNIQUE = "unique"
    RANGE = "range"
    REGEX = "regex"
    ALLOWED_VALUES = "allowed_values"
    REFERENTIAL = "referential"
    FRESHNESS = "freshness"
    CUSTOM_SQL = "custom_sql"


class Severity(StrEnum):
    """Errors send the failing rows to the dead-letter table; warnings only count."""

    ERROR = "error"
    WARNING = "warning"


class QualityCheck(BaseModel):
    """One check; `params` per type:

    range {min?, max?}; regex {pattern}; allowed_values {values}; referential
    {table, column} (a reference table, e.g. instruments.symbol); freshness {max_age_s}
    (the newest value of `field` must be that recent; a whole-batch check); custom_sql
    {condition} (a Polars SQL condition every valid row meets).
    """

    model_config = ConfigDict(frozen=True)

    check_id: str = Field(pattern=_ID)
    check_type: CheckType
    field: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    severity: Severity = Severity.ERROR


class DataSource(BaseModel):
    """A registered source of one tenant: where to read, how, and what to do with it."""

    source_id: str = Field(pattern=_ID)
    source_type: DataSourceType
    ingestion_mode: IngestionMode
    data_format: DataFormat
    location: str = Field(
        default="", description="fsspec URL, postgresql://...#table, http(s) URL, bus topic"
    )
    schedule: str | None = Field(default=None, description="cron expression (BATCH_SCHEDULED)")
    target_table: str = "portfolio_data_lake"
    connection_config: dict[str, Any] = Field(default_factory=dict)
    transformation_rules: list[str] = Field(
        default_factory=list, description="rule ids applied in order (latest versions)"
    )
    quality_checks: list[QualityCheck] = Field(default_factory=list)
    fields: dict[str, str] | None = Field(
        default=None, description="declared input columns -> types: rules are checked on create"
    )
    enabled: bool = True
    tenant_id: str = "default"
    created_at: AwareDatetime | None = None


class DataIngestionRequest(BaseModel):
    """Run (and register, if new) a source with these rules and checks."""

    source_id: str = Field(pattern=_ID)
    source_type: DataSourceType
    ingestion_mode: IngestionMode
    data_format: DataFormat
    schedule: str | None = None
    transformation_rules: list[TransformationRule] = Field(default_factory=list)
    quality_checks: list[QualityCheck] = Field(default_factory=list)
    location: str = ""
    target_table: str = "portfolio_data_lake"
    connection_config: dict[str, Any] = Field(default_factory=dict)
    fields: dict[str, str] | None = None


class JobStatus(StrEnum):
    """Lifecycle of a job."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # finished; some records went to the dead-letter table
    FAILED = "failed"


class IngestionJob(BaseModel):
    """One run of a source into the lake."""

    job_id: str
    source_id: str
    status: JobStatus = JobStatus.PENDING
    records_processed: int = 0
    records_failed: int = 0
    start_time: AwareDatetime
    end_time: AwareDatetime | None = None
    error_details: list[dict[str, Any]] | None = None
    tenant_id: str = "default"
    records_filtered: int = Field(default=0, description="left out by filter rules")
    rule_versions: dict[str, int] = Field(default_factory=dict, description="rule id -> version")
    inputs: list[dict[str, Any]] = Field(
        default_factory=list, description="what was read: uri, sha256 or offset/cursor, rows"
    )
    target_table: str | None = None


class ValidationError(BaseModel):
    """One failed check: how many rows, and a few examples."""

    check_id: str
    check_type: CheckType
    field: str | None = None
    severity: Severity
    failed_records: int = Field(ge=0)
    message: str
    examples: list[Any] = Field(default_factory=list)


class ColumnProfile(BaseModel):
    """What a column held in one job."""

    dtype: str
    null_count: int
    distinct_count: int = Field(description="approximate (HyperLogLog)")
    min: Any = None
    max: Any = None
    mean: float | None = None


class DataProfile(BaseModel):
    """Per-column profile of the records a job read (after transformation)."""

    row_count: int
    columns: dict[str, ColumnProfile] = Field(default_factory=dict)
    sampled_rows: int | None = Field(
        default=None,
        description="when set, distinct counts, min, max and mean are over this many rows"
        " spread evenly over the job (row and null counts are exact)",
    )


class DataQualityReport(BaseModel):
    """What the checks found in one job."""

    job_id: str
    total_records: int = Field(ge=0)
    valid_records: int = Field(ge=0)
    invalid_records: int = Field(ge=0)
    quality_score: float = Field(ge=0.0, le=1.0)
    validation_errors: list[ValidationError] = Field(default_factory=list)
    data_profiling: DataProfile


class DataIngestedPayload(BaseModel):
    """The `data_ingested` part of the DataIngestedEvent."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    source_id: str
    source_type: DataSourceType
    ingestion_mode: IngestionMode
    records_processed: int
    records_failed: int
    quality_score: float
    processing_time_ms: float
    data_categories: list[str]
    tenant_id: str = "default"
