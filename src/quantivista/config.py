"""Settings: the one home of configuration.

Values come, in order of precedence, from keyword arguments, `QV_*` environment variables
(nested with a double underscore: `QV_STORAGE__COMPRESSION_LEVEL=5`), an optional TOML file
(`qv.toml` in the working directory, or the path in `QV_CONFIG_FILE`), then the defaults here.
No other module reads the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from quantivista.errors import ConfigurationError
from quantivista.model.rates import Rate

__all__ = [
    "ApiSettings",
    "BreakerSettings",
    "BusSettings",
    "config_source",
    "CacheSettings",
    "DaskSettings",
    "IngestSettings",
    "IntegrateSettings",
    "ProviderEndpointSettings",
    "ProviderFaultSettings",
    "ProbeSettings",
    "ProviderSettings",
    "RateWindow",
    "ResilienceSettings",
    "RetrySettings",
    "QualitySettings",
    "ServiceSettings",
    "Settings",
    "SimulatorServerSettings",
    "SimulatorSettings",
    "StorageSettings",
    "StreamSettings",
    "WorkerSettings",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    """Where and how bars are kept."""

    backend: Literal["lake", "postgres"] = "lake"
    compression: Literal["zstd", "snappy", "lz4", "gzip", "none"] = "zstd"
    compression_level: int = Field(
        default=1,
        ge=1,
        le=22,
        description="zstd/gzip level of hot files; 1 writes byte-stream-split prices twice as"
        " fast as 3 at the same size (the cold tier uses 9)",
    )
    daily_compression: Literal["zstd", "snappy", "lz4", "gzip", "none"] | None = Field(
        default="none",
        description="codec of the hot files of daily and longer timeframes (one file a bucket,"
        " a small share of the bytes, read a symbol's years at a time): uncompressed PLAIN"
        " floats decode in ~0.6x the instructions of zstd; None: `compression`",
    )
    daily_format: Literal["arrow", "parquet"] = Field(
        default="arrow",
        description="format of new hot files of daily and longer timeframes: uncompressed Arrow"
        " IPC (a cold read maps the file and slices a symbol, nothing decoded) or Parquet;"
        " a partition keeps the format it was created with (older stores still read)",
    )
    intraday_format: Literal["arrow", "parquet"] = Field(
        default="arrow",
        description="format of new hot month files of intraday timeframes, as `daily_format`"
        " (a partition keeps its format; the cold tier keeps Parquet): with lz4 buffers, a"
        " symbol-month reads cold in ~0.6x the time of Parquet at ~1.1x its size",
    )
    intraday_arrow_compression: Literal["none", "lz4", "zstd"] = Field(
        default="lz4",
        description="buffer codec of Arrow IPC month files, in batches of whole symbols (a"
        " cold read decompresses its symbol's): none is ~5x Parquet's size, zstd ~0.7x"
        " and reads slower (perf/month_formats.py)",
    )
    fsync: bool = Field(
        default=False,
        description="fsync each file before its atomic rename: survives power loss, costs speed",
    )
    row_group_rows: int = Field(
        default=4096,
        ge=0,
        description="lake files are cut into row groups of whole symbols, each at least this"
        " many rows: a read of one symbol decodes only its groups (0: one group a file)",
    )
    write_threads: int | None = Field(
        default=None, ge=1, le=64, description="parallel partition writers (default: CPU count)"
    )
    postgres_schema: str = Field(
        default="quantivista",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="schema of the PostgreSQL backend (DSN: services.postgres_dsn)",
    )
    postgres_pool_size: int = Field(default=4, ge=1, le=64, description="pooled connections")
    buckets: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="lake files per timeframe (and month): symbols hash into this many buckets;"
        " fixed when a lake is created",
    )
    cache_mb: int = Field(
        default=256, ge=0, description="in-process cache of hot lake partitions (0: off)"
    )
    delta_files: int = Field(
        default=16,
        ge=0,
        description="appends after a partition's last bars land as delta files; this many in"
        " one timeframe start a background merge of them (a fold into the partitions once"
        " they hold 100,000 rows; 0: appends rewrite the partition)",
    )
    archive_url: str | None = Field(
        default=None, description="cold tier for archived bars: any fsspec URL (file://, s3://)"
    )
    hot_days: dict[str, int] = Field(
        default_factory=dict, description='days each timeframe stays hot, e.g. {"1m": 730}'
    )
    rollups: tuple[str, ...] = Field(
        default=(),
        description='timeframes kept rolled up from 1m bars on every write, e.g. ["5m", "1d"]',
    )
    sweep_after_s: float = Field(
        default=3600.0,
        gt=0,
        description="compaction removes lake and cold temporaries (.tmp-*) not modified for this"
        " long: far above any live write, so only killed writers' leftovers go",
    )


class IngestSettings(_Section):
    """Defaults for ingestion jobs."""

    default_provider: str = "synthetic"
    calendar: str = Field(default="XNYS", description="ISO 10383 MIC of the default calendar")
    symbols_per_batch: int = Field(default=100, ge=1, description="symbols written per batch")
    fetch_concurrency: int = Field(default=4, ge=1, le=64, description="parallel fetches")
    lease_s: float = Field(
        default=60.0,
        gt=0,
        description="a running task's lease: a worker silent this long is taken for dead",
    )
    heartbeat_s: float = Field(
        default=10.0, gt=0, description="how often a running task renews its lease"
    )
    keep_recent_history: bool = Field(
        default=False,
        description="write_bars with a timeframe keeps the bars it stored as the next"
        " batch's validation history instead of reading it back (micro-batches); only for"
        " a process no other process writes those series beside",
    )

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> IngestSettings:
        if self.heartbeat_s >= self.lease_s:
            raise ValueError("ingest.heartbeat_s must be shorter than ingest.lease_s")
        return self


class SimulatorSettings(_Section):
    """The seeded market model behind the `synthetic` provider."""

    seed: int = 42
    universe_size: int = Field(default=60, ge=2, le=5000)
    fault_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of bars the synthetic provider damages"
    )


def _default_limits() -> dict[str, list[str]]:
    # free tiers from shared/research/providers.md; unknown limits get a conservative 1/second
    return {
        "alpha_vantage": ["1/second", "5/minute", "25/day"],
        "finnhub": ["30/second", "60/minute"],
        "polygon": ["5/minute"],
        "tiingo": ["50/hour", "1000/day"],
        "twelve_data": ["8/minute", "800/day"],
        "iex_cloud": ["10/second"],
        "fred": ["120/minute"],
        "yahoo": ["1/second"],
        "stooq": ["1/second"],
    }


class BreakerSettings(_Section):
    """Circuit breaker per provider."""

    failure_threshold: int = Field(default=5, ge=1, description="consecutive failures to open")
    call_timeout_s: float = Field(default=10.0, gt=0, description="a call slower than this fails")
    reset_timeout_s: float = Field(
        default=30.0, ge=0, description="seconds open before one half-open probe is let through"
    )


class RetrySettings(_Section):
    """Retries of one provider before the router fails over to the next."""

    max_attempts: int = Field(
        default=3, ge=1, le=20, description="calls per provider, first included"
    )
    base_delay_s: float = Field(default=0.5, ge=0, description="backoff before the 2nd call")
    max_delay_s: float = Field(default=30.0, ge=0, description="cap of one backoff")
    jitter: float = Field(default=0.5, ge=0, le=1, description="share of the delay randomized")
    max_retry_after_s: float = Field(
        default=60.0, ge=0, description="a longer Retry-After fails over instead of waiting"
    )


class CacheSettings(_Section):
    """Response cache of the router, keyed by the provider-independent request."""

    enabled: bool = True
    max_entries: int = Field(default=1024, ge=0)
    recent_ttl_s: float = Field(default=300.0, ge=0, description="TTL of recent data")
    history_ttl_s: float = Field(default=7 * 86400.0, ge=0, description="TTL of settled history")
    settled_after_days: int = Field(
        default=3, ge=0, description="history ending this many days ago cannot change any more"
    )


class ResilienceSettings(_Section):
    """Rate limits, circuit breakers, retries and caching around provider calls."""

    backend: Literal["memory", "redis"] = Field(
        default="memory", description="where rate-limit state lives (redis: shared by workers)"
    )
    redis_prefix: str = "qv:ratelimit"
    limits: dict[str, list[str]] = Field(
        default_factory=_default_limits,
        description='per provider, windows like "5/minute", "25/day", "1/second"; merged '
        "over the vendor defaults ([] = unlimited)",
    )
    max_wait_s: float = Field(
        default=120.0,
        ge=0,
        description="a call queues this long for a token at most, then QuotaExhaustedError",
    )
    ordering: Literal["given", "auto"] = Field(
        default="given",
        description="given: providers named for a job are tried in that order; auto: free "
        "before paid, by priority and health, load balanced among equals",
    )
    margin_s: float = Field(
        default=0.1,
        ge=0,
        description="added to every window: calls reach the vendor a moment after the grant",
    )
    breaker: BreakerSettings = BreakerSettings()
    retry: RetrySettings = RetrySettings()
    cache: CacheSettings = CacheSettings()

    @field_validator("limits")
    @classmethod
    def _check_limits(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for rates in value.values():
            for text in rates:
                try:
                    Rate.parse(text)
                except ConfigurationError as exc:
                    raise ValueError(str(exc)) from None
        # vendors not named keep their defaults: an empty list lifts a limit on purpose
        return {**_default_limits(), **{name.lower(): rates for name, rates in value.items()}}


class ServiceSettings(_Section):
    """Addresses of external servers, used when a component runs on real engines."""

    postgres_dsn: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/test")
    redis_url: str = "redis://127.0.0.1:6379/0"
    nats_url: str = "nats://127.0.0.1:4222"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    kafka_bootstrap: str | None = None
    pulsar_url: str | None = None


class ProviderEndpointSettings(_Section):
    """How to reach one vendor: key, base URL (None = the vendor's real URL) and timeout."""

    api_key: SecretStr | None = None
    base_url: str | None = Field(
        default=None, description="override the vendor URL, e.g. the provider simulator's"
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="per-request timeout")


class ProviderSettings(_Section):
    """Per-vendor connection settings (`QV_PROVIDERS__POLYGON__API_KEY=...`)."""

    alpha_vantage: ProviderEndpointSettings = ProviderEndpointSettings()
    yahoo: ProviderEndpointSettings = ProviderEndpointSettings()
    finnhub: ProviderEndpointSettings = ProviderEndpointSettings()
    iex_cloud: ProviderEndpointSettings = ProviderEndpointSettings()
    polygon: ProviderEndpointSettings = ProviderEndpointSettings()
    tiingo: ProviderEndpointSettings = ProviderEndpointSettings()
    stooq: ProviderEndpointSettings = ProviderEndpointSettings()


# -- issue 3: provider simulator server -------------------------------------------------
class RateWindow(_Section):
    """One rate-limit window: at most `calls` accepted calls in any `seconds`-long span."""

    calls: int = Field(ge=1)
    seconds: float = Field(gt=0.0)


class ProviderFaultSettings(_Section):
    """Faults the provider simulator injects for one provider (all rates are in [0, 1]).

    Per-call faults (`timeout_rate`, `error_rate`, `error_body_rate`, `malformed_rate`) are
    drawn from one uniform number per call, so each occurs at exactly its configured rate
    and their sum must not exceed 1. Bar faults (`outlier_rate`, `missing_bar_rate`) hit the
    same bars on every request (a bad feed is consistently bad). Deterministic for a seed.
    """

    down: bool = Field(default=False, description="answer every call with 503")
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="share of calls -> 5xx")
    timeout_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of calls that hang for hang_s"
    )
    hang_s: float = Field(default=30.0, ge=0.0, description="how long a timed-out call hangs")
    error_body_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of calls -> HTTP 200 vendor error body"
    )
    malformed_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of calls -> truncated body"
    )
    outlier_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of bars with prices scaled by a factor"
    )
    outlier_factor: float = Field(default=10.0, gt=1.0, description="outlier price multiplier")
    missing_bar_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of bars left out of responses"
    )
    latency_ms: float = Field(default=0.0, ge=0.0, description="fixed delay of every call")
    latency_jitter_ms: float = Field(
        default=0.0, ge=0.0, description="extra uniform random delay in [0, jitter]"
    )
    rate_limits: tuple[RateWindow, ...] = Field(
        default=(), description="windows; a call beyond any of them is a counted violation"
    )
    rate_limit_slack_s: float = Field(
        default=0.05,
        ge=0.0,
        description="windows are measured this much shorter, to absorb network jitter",
    )

    @model_validator(mode="after")
    def _per_call_rates_fit(self) -> ProviderFaultSettings:
        total = self.timeout_rate + self.error_rate + self.error_body_rate + self.malformed_rate
        if total > 1.0 + 1e-9:
            raise ValueError(f"per-call fault rates sum to {total:.3f} > 1")
        return self


class SimulatorServerSettings(_Section):
    """The local HTTP/WebSocket server speaking real providers' wire formats."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535, description="0 picks a free port")
    seed: int = 42
    universe_size: int = Field(default=60, ge=2, le=5000)
    as_of: date | None = Field(default=None, description="first day without bars (None: today)")
    defaults: ProviderFaultSettings = ProviderFaultSettings()
    providers: dict[str, ProviderFaultSettings] = Field(
        default_factory=dict, description="per-provider faults; others use `defaults`"
    )
    ws_trade_interval_s: float = Field(default=0.2, gt=0.0, description="Finnhub WS trade pace")
    ws_ping_interval_s: float = Field(default=30.0, gt=0.0, description="Finnhub WS ping pace")
    ws_duplicate_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of WS trade messages sent twice"
    )
    ws_disconnect_after_s: float | None = Field(
        default=None, gt=0.0, description="drop each WS connection after this long (reconnects)"
    )

    def faults_for(self, provider: str) -> ProviderFaultSettings:
        """Return the fault settings of `provider` (its own section, else the defaults)."""
        return self.providers.get(provider, self.defaults)


class QualitySettings(_Section):
    """Validation thresholds: spikes, stale runs, split matching, consensus (issue 4)."""

    spike_window: int = Field(default=20, ge=5, description="bars in the rolling MAD window")
    spike_z: float = Field(default=6.0, gt=0, description="robust z of a close spike")
    wick_z: float = Field(default=10.0, gt=0, description="robust z of a high/low wick spike")
    min_scale: float = Field(default=0.002, gt=0, description="floor of the return scale")
    stale_run: int = Field(default=5, ge=2, description="identical bars in a row that are stale")
    split_tolerance: float = Field(default=0.03, gt=0, description="log distance to a ratio")
    consensus_tolerance: float = Field(default=0.005, ge=0, description="relative OHLC tolerance")
    rules_file: Path | None = Field(default=None, description="TOML file of business rules")
    max_issues_per_rule: int = Field(default=50, ge=0, description="issues listed per rule")


class IntradaySettings(_Section):
    """Intraday sessions and the 1-minute bad-print rule (issue 19)."""

    rollup_session: Literal["regular", "extended"] = Field(
        default="regular",
        description='"extended": storage rollups add pre/post-market bars (flagged'
        " outside_session) beside the regular-session ones",
    )
    bad_print_window: int = Field(
        default=5, ge=2, le=30, description="neighbour minutes on each side of a 1m bar"
    )
    bad_print_z: float = Field(
        default=12.0, gt=0, description="robust z of a print against its neighbours"
    )
    bad_print_min_move: float = Field(
        default=0.005, gt=0, description="least relative distance from the neighbours"
    )
    auction_factor: float = Field(
        default=3.0, ge=1, description="thresholds x this on the session's first/last minute"
    )


class ApiSettings(_Section):
    """The Market Data API service (`qv serve`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535, description="0 picks a free port")
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="HS256 signing key of access tokens; unset: one is generated and kept in"
        " the store, so every API process of one platform shares it",
    )
    token_ttl_s: int = Field(default=3600, ge=60, description="access token lifetime")
    rate_limits: list[str] = Field(
        default_factory=lambda: ["50/second", "2000/minute"],
        description="per client, e.g. 100/minute (shared through Redis with"
        " resilience.backend = redis)",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed by CORS (empty: none)"
    )
    exports_dir: Path | None = Field(
        default=None, description="where bulk exports are written (default: DATA_DIR/exports)"
    )
    relay: bool | None = Field(
        default=None,
        description="feed WebSocket clients from the broker's bar and trade topics (None: when "
        "bus.url is a real broker, not memory://)",
    )
    relay_topics: list[str] = Field(
        default_factory=lambda: ["bars.normalized", "bars.enriched", "trades.finnhub",
                                 "trades.synthetic", "quality.alerts"],
        description="broker topics relayed to WebSocket clients",
    )  # fmt: skip
    exports_url: str | None = Field(
        default=None,
        description="an fsspec URL for bulk exports (s3://bucket/exports) shared by every API "
        "host; overrides exports_dir",
    )
    exports_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options of exports_url (endpoint, region; keys from env)",
    )
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    page_size: int = Field(default=10_000, ge=1, description="bars per JSON page")
    cache_mb: int = Field(
        default=512,
        ge=0,
        description="in-process response cache (an answer up to half of it is kept: a"
        " 500-symbol x 10-year Arrow export is ~120 MB)",
    )
    ws_heartbeat_s: float = Field(
        default=15.0, gt=0, description="a quiet WebSocket gets a heartbeat this often"
    )
    ws_queue_size: int = Field(
        default=4096, ge=1, description="messages a WebSocket client may lag before it is dropped"
    )

    @field_validator("rate_limits")
    @classmethod
    def _check_rates(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                Rate.parse(text)
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        return value


class ProbeSettings(_Section):
    """Health, readiness and metrics listeners of `qv stream`, `qv integrate`, `qv worker`
    and `qv scheduler` (the API serves its own on `api.port`)."""

    host: str = "127.0.0.1"
    ports: dict[str, int] = Field(
        default_factory=lambda: {
            "stream": 9101,
            "integrate": 9102,
            "worker": 9103,
            "scheduler": 9104,
        },
        description="probe port per service (0 picks a free port)",
    )
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def port_of(self, service: str) -> int:
        """Return the probe port of `service` (0, a free port, when none is configured)."""
        return self.ports.get(service, 0)


# -- issue 14: streaming and distribution -------------------------------------------------
class BusSettings(_Section):
    """The message broker `qv stream`, `qv integrate`, `qv replay` and `qv dlq` use."""

    url: str = Field(
        default="memory://",
        description="memory:// (in-process), nats://host:port[?prefix=qv] (JetStream), "
        "kafka://host:port[?prefix=qv] or pulsar://host:port[?prefix=qv]",
    )
    codec: Literal["json", "avro", "protobuf"] = "avro"
    pulsar_url: str | None = None
    # broker TLS and auth, passed by bus/connect.py to every backend (bus/security.py)
    tls: bool | None = Field(default=None, description="TLS (None: on when a CA or cert is set)")
    ca_file: Path | None = Field(default=None, description="CA bundle that signs the broker")
    cert_file: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: Path | None = None
    username: str | None = Field(default=None, description="Kafka SASL / NATS / Pulsar user")
    password: SecretStr | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    nats_creds: Path | None = Field(default=None, description="NATS .creds file (JWT + nkey)")


class StreamSettings(_Section):
    """`qv stream`: live trades -> 1-minute bars -> validate -> store -> publish."""

    batch_ms: int = Field(default=100, ge=1, le=60_000, description="micro-batch length")
    batch_rows: int = Field(
        default=20_000, ge=1, description="a micro-batch closes at this many trades, if sooner"
    )
    lateness_s: float = Field(default=2.0, ge=0, description="watermark behind the last trade")
    idle_s: float = Field(default=5.0, ge=0, description="the clock closes quiet minutes")
    retention_s: float = Field(
        default=3600.0, gt=0, description="how late a trade may still amend its bar"
    )
    queue_size: int = Field(default=1_000, ge=1, description="feed frames waiting, at most")
    publish_trades: bool = True
    synthetic_rate: float = Field(
        default=1000.0, gt=0, description="trades/s of --source synthetic"
    )
    late_fraction: float = Field(default=0.0, ge=0, le=1, description="synthetic late trades")


class IntegrateSettings(_Section):
    """`qv integrate`: raw bars -> validate -> adjust -> enrich -> enriched bars."""

    group: str = "integrate"
    batch: int = Field(default=200, ge=1, description="messages per fetch")
    reporting_currency: str = "USD"
    ack_wait_s: float = Field(default=30.0, gt=0)
    max_deliver: int = Field(default=5, ge=1)


class OpsSettings(_Section):
    """Operations: metric groups, the scheduler, alerting and tracing (issue 16)."""

    symbol_groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="freshness groups: name -> regular expressions of symbols (none: 'all')",
    )

    @field_validator("symbol_groups")
    @classmethod
    def _check_groups(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, patterns in value.items():
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(
                        f"group {name}: {pattern!r} is no regular expression: {exc}"
                    ) from None
        return value


class ScheduleEntry(_Section):
    """One entry of `qv scheduler`: a registered job on a cron line or after exchanges' closes."""

    job: str = Field(description="a registered job: retention, backup, compaction, "
                     "universe_update, or one a plug-in registered")  # fmt: skip
    cron: str | None = Field(
        default=None, description="cron line in UTC (5 fields; a 6th is seconds)"
    )
    after_close: list[str] = Field(
        default_factory=list, description="MICs: run after each session close of each exchange"
    )
    offset_minutes: float = Field(default=30.0, ge=0, description="minutes after the close")
    args: dict[str, Any] = Field(default_factory=dict, description="passed to the job")
    enabled: bool = True

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleEntry:
        if (self.cron is None) == (not self.after_close):
            raise ValueError("a schedule entry needs either cron or after_close, not both")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(f"{self.cron!r} is not a cron line")
        return self


def _default_entries() -> dict[str, ScheduleEntry]:
    return {
        "universe-update": ScheduleEntry(job="universe_update", after_close=["XNYS"]),
        "retention": ScheduleEntry(job="retention", cron="15 2 * * *"),
        "backup": ScheduleEntry(job="backup", cron="30 2 * * *"),
        "compaction": ScheduleEntry(job="compaction", cron="0 3 * * 0"),
        "sla-probe": ScheduleEntry(job="sla_probe", cron="* * * * *"),
        # reporting-side sources carry their own cron lines: check them every minute
        "workflow-sources": ScheduleEntry(job="workflow_sources", cron="* * * * *"),
    }


class SchedulerSettings(_Section):
    """`qv scheduler`: what runs when; one active scheduler per store (a lease)."""

    entries: dict[str, ScheduleEntry] = Field(default_factory=_default_entries)
    tick_s: float = Field(default=5.0, gt=0, description="how often due entries are checked")
    backup_dir: Path | None = Field(
        default=None, description="where scheduled backups go (default: DATA_DIR/../backups)"
    )
    keep_backups: int = Field(default=7, ge=1, description="scheduled backups kept")


class AlertingSettings(_Section):
    """In-process alerting of the embedded default (a deployment uses Prometheus instead)."""

    enabled: bool = False
    rules_file: Path | None = Field(
        default=None, description="Prometheus rule file (default: the packaged ops/alerts.yml)"
    )
    interval_s: float = Field(default=15.0, gt=0, description="sample and evaluate this often")
    repeat_s: float = Field(default=4 * 3600.0, gt=0, description="re-notify a firing alert")
    webhook_urls: list[str] = Field(default_factory=list, description="Alertmanager-style JSON")
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    email_from: str = "quantivista@localhost"
    email_to: list[str] = Field(default_factory=list)


class TracingSettings(_Section):
    """OpenTelemetry traces: exported by OTLP/HTTP when an endpoint is set."""

    otlp_endpoint: str | None = Field(
        default=None, description="e.g. http://tempo:4318/v1/traces (none: tracing is a no-op)"
    )
    otlp_headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="sent with each export (an API key of a vendor)"
    )
    sample_ratio: float = Field(default=1.0, ge=0, le=1, description="share of new traces kept")
    service_prefix: str = "quantivista-"
    resource: dict[str, str] = Field(default_factory=dict, description="extra resource attrs")
    timeout_s: float = Field(default=10.0, gt=0)


class SlaSettings(_Section):
    """`qv sla`: market hours, targets, and the API the `sla_probe` job requests."""

    exchange: str | None = Field(default=None, description="MIC (default: ingest.calendar)")
    timezone: str = "America/New_York"
    market_open: time = time(6, 30)
    market_close: time = time(20, 0)
    api_url: str | None = Field(default=None, description="default: from api.host and api.port")
    probe_timeout_s: float = Field(default=5.0, gt=0)
    uptime_target: float = Field(default=0.999, ge=0, le=1)
    freshness_p95_target_s: float = Field(default=4 * 3600.0, gt=0)
    retrieval_target: float = Field(default=0.99, ge=0, le=1)
    api_p99_target_s: float = Field(default=0.5, gt=0)
    quality_target: float = Field(default=0.95, ge=0, le=1)


class WorkerSettings(_Section):
    """`qv worker` processes sharing the job catalog's queue (issue 17)."""

    enabled: bool = Field(
        default=False,
        description="jobs posted to the API are queued for workers instead of run in the API",
    )
    queue: str = Field(default="default", min_length=1, description="the queue workers serve")
    concurrency: int = Field(default=2, ge=1, le=64, description="tasks one worker runs at once")
    max_attempts: int = Field(
        default=3, ge=1, le=100, description="claims of one task before it fails with the reason"
    )
    poll_s: float = Field(
        default=0.5, gt=0, description="an idle worker looks for new tasks this often"
    )
    reap_s: float = Field(
        default=5.0, gt=0, description="how often a worker returns lapsed leases to the queue"
    )
    drain_s: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM, running tasks get this long to finish, then their leases are"
        " released for other workers",
    )
    queue_url: str | None = Field(
        default=None,
        description="a NATS JetStream server (nats://host:4222?prefix=qv): queued task ids go"
        " to a work-queue stream per queue, workers pull them (None: the job catalog)",
    )
    task_cost_s: float = Field(
        default=0.15,
        ge=0,
        description="CPU seconds of one task's own work (parse, validate, store a batch); the"
        " backfill plan's time uses it (measure it with perf/workers.py)",
    )


class DaskSettings(_Section):
    """Universe-wide computations on Dask distributed (issue 17)."""

    scheduler_address: str | None = Field(
        default=None,
        description="a running scheduler, e.g. tcp://10.0.0.5:8786 (None: a LocalCluster)",
    )
    workers: int = Field(default=2, ge=1, le=256, description="LocalCluster worker processes")
    threads_per_worker: int = Field(default=1, ge=1, le=64)
    host: str = Field(default="127.0.0.1", description="where a LocalCluster listens")


class Settings(BaseSettings):
    """All configuration of a platform instance (frozen once built)."""

    model_config = SettingsConfigDict(
        env_prefix="QV_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(default=Path("qv-data"), description="root of the embedded store")
    require_services: bool = Field(
        default=False,
        description="tests fail instead of skipping when a server they need is unreachable",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    storage: StorageSettings = StorageSettings()
    ingest: IngestSettings = IngestSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    services: ServiceSettings = ServiceSettings()
    providers: ProviderSettings = ProviderSettings()
    simulator_server: SimulatorServerSettings = SimulatorServerSettings()
    quality: QualitySettings = QualitySettings()
    intraday: IntradaySettings = IntradaySettings()
    api: ApiSettings = ApiSettings()
    probes: ProbeSettings = ProbeSettings()
    workers: WorkerSettings = WorkerSettings()
    dask: DaskSettings = DaskSettings()
    ops: OpsSettings = OpsSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    alerting: AlertingSettings = AlertingSettings()
    tracing: TracingSettings = TracingSettings()
    sla: SlaSettings = SlaSettings()
    bus: BusSettings = BusSettings()
    stream: StreamSettings = StreamSettings()
    integrate: IntegrateSettings = IntegrateSettings()

    def __init__(self, **values: Any) -> None:
        """Load settings; a wrong value or file raises one-line `ConfigurationError`s."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc), source=config_source()) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{config_source()} is not valid TOML: {exc}") from None

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        named = os.environ.get("QV_CONFIG_FILE")
        toml_path = Path(named or "qv.toml")
        if named and not toml_path.is_file():  # a file asked for by name must exist
            raise ConfigurationError("QV_CONFIG_FILE names no file", path=named)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    def with_data_dir(self, path: str | Path) -> Settings:
        """Return a copy of these settings rooted at another data directory."""
        return self.model_copy(update={"data_dir": Path(path).expanduser()})

    def summary(self) -> dict[str, Any]:
        """Return the settings as plain data with secrets masked (safe to print or log)."""
        return self.model_dump(mode="json")


def config_source() -> str:
    """Return the TOML file settings are read from, or where else they come from."""
    named = os.environ.get("QV_CONFIG_FILE")
    if named:
        return named
    return "qv.toml" if Path("qv.toml").is_file() else "QV_* environment variables"


def _describe(exc: ValidationError) -> str:
    """Return pydantic's errors as one line: `storage.backend: Input should be ...`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        parts.append(f"{where}: {error['msg']}")
    return "invalid settings: " + "; ".join(parts)
