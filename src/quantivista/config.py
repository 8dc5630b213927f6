"""Settings: the one home of configuration.

Values come, in order of precedence, from keyword arguments, `QV_*` environment variables
(nested with a double underscore: `QV_STORAGE__COMPRESSION_LEVEL=5`), an optional TOML file
(`qv.toml` in the working directory, or the path in `QV_CONFIG_FILE`), then the defaults here.
No other module reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "IngestSettings",
    "QualitySettings",
    "ServiceSettings",
    "Settings",
    "SimulatorSettings",
    "StorageSettings",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    """Where and how bars are kept."""

    backend: Literal["lake"] = "lake"
    compression: Literal["zstd", "snappy", "lz4", "gzip", "none"] = "zstd"
    compression_level: int = Field(default=3, ge=1, le=22)
    fsync: bool = Field(
        default=False,
        description="fsync each file before its atomic rename: survives power loss, costs speed",
    )
    write_threads: int | None = Field(
        default=None, ge=1, le=64, description="parallel partition writers (default: CPU count)"
    )


class IngestSettings(_Section):
    """Defaults for ingestion jobs."""

    default_provider: str = "synthetic"
    calendar: str = Field(default="XNYS", description="ISO 10383 MIC of the default calendar")
    symbols_per_batch: int = Field(default=100, ge=1, description="symbols written per batch")
    fetch_concurrency: int = Field(default=4, ge=1, le=64, description="parallel fetches")


class SimulatorSettings(_Section):
    """The seeded market model behind the `synthetic` provider."""

    seed: int = 42
    universe_size: int = Field(default=60, ge=2, le=5000)
    fault_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of bars the synthetic provider damages"
    )


class ServiceSettings(_Section):
    """Addresses of external servers, used when a component runs on real engines."""

    postgres_dsn: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/test")
    redis_url: str = "redis://127.0.0.1:6379/0"
    nats_url: str = "nats://127.0.0.1:4222"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    kafka_bootstrap: str | None = None
    pulsar_url: str | None = None


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
    services: ServiceSettings = ServiceSettings()
    quality: QualitySettings = QualitySettings()

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
        toml_path = Path(os.environ.get("QV_CONFIG_FILE", "qv.toml"))
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
