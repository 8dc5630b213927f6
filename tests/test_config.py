"""Settings: defaults, QV_* environment variables, qv.toml, precedence, freezing, secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from quantivista.config import Settings, StorageSettings
from quantivista.errors import ConfigurationError

SECRET = "s3cr3t-pa55word"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run each test with no QV_* variables and an empty working directory (no qv.toml)."""
    for key in list(os.environ):
        if key.upper().startswith("QV_"):
            monkeypatch.delenv(key)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_source() -> None:
    s = Settings()
    assert s.data_dir == Path("qv-data")
    assert s.require_services is False
    assert s.log_level == "WARNING"
    assert s.storage.compression == "zstd"
    assert s.storage.compression_level == 1
    assert s.storage.fsync is False
    assert s.ingest.calendar == "XNYS"
    assert s.services.postgres_dsn.get_secret_value() == "postgresql://postgres@127.0.0.1:5432/test"
    assert s.services.redis_url == "redis://127.0.0.1:6379/0"
    assert s.services.nats_url == "nats://127.0.0.1:4222"


def test_top_level_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QV_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("QV_REQUIRE_SERVICES", "1")
    s = Settings()
    assert s.log_level == "DEBUG"
    assert s.require_services is True


def test_double_underscore_nests_into_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QV_STORAGE__COMPRESSION_LEVEL", "5")
    monkeypatch.setenv("QV_STORAGE__FSYNC", "true")
    monkeypatch.setenv("QV_INGEST__FETCH_CONCURRENCY", "9")
    monkeypatch.setenv("QV_SERVICES__NATS_URL", "nats://10.1.2.3:4223")
    s = Settings()
    assert s.storage.compression_level == 5
    assert s.storage.fsync is True
    assert s.ingest.fetch_concurrency == 9
    assert s.services.nats_url == "nats://10.1.2.3:4223"
    # untouched siblings keep their defaults
    assert s.storage.compression == "zstd"
    assert s.ingest.calendar == "XNYS"


def test_env_values_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QV_STORAGE__COMPRESSION_LEVEL", "99")
    with pytest.raises(ConfigurationError, match=r"storage\.compression_level: Input should be"):
        Settings()


def test_unknown_nested_env_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QV_STORAGE__NO_SUCH_OPTION", "1")
    with pytest.raises(ConfigurationError, match="no_such_option"):
        Settings()


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no_such_setting"):
        Settings(no_such_setting=1)  # type: ignore[call-arg]


def test_toml_file_named_by_qv_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = write_toml(
        tmp_path / "custom.toml",
        'log_level = "ERROR"\n'
        "[storage]\ncompression_level = 7\n"
        '[services]\nredis_url = "redis://10.0.0.1:6380/1"\n',
    )
    monkeypatch.setenv("QV_CONFIG_FILE", str(cfg))
    s = Settings()
    assert s.log_level == "ERROR"
    assert s.storage.compression_level == 7
    assert s.services.redis_url == "redis://10.0.0.1:6380/1"


def test_qv_toml_in_working_directory_is_read(clean_environment: Path) -> None:
    write_toml(clean_environment / "qv.toml", "[ingest]\nsymbols_per_batch = 17\n")
    assert Settings().ingest.symbols_per_batch == 17


def test_qv_config_file_takes_the_place_of_qv_toml(
    monkeypatch: pytest.MonkeyPatch, clean_environment: Path, tmp_path: Path
) -> None:
    write_toml(clean_environment / "qv.toml", 'log_level = "INFO"\n')
    monkeypatch.setenv("QV_CONFIG_FILE", str(write_toml(tmp_path / "x.toml", "[ingest]\n")))
    assert Settings().log_level == "WARNING"


def test_precedence_keyword_over_env_over_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = write_toml(
        tmp_path / "qv.toml",
        'log_level = "ERROR"\n[storage]\ncompression_level = 7\ncompression = "gzip"\n',
    )
    monkeypatch.setenv("QV_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("QV_LOG_LEVEL", "INFO")
    monkeypatch.setenv("QV_STORAGE__COMPRESSION_LEVEL", "4")
    s = Settings()
    assert s.log_level == "INFO"  # env beats the file
    assert s.storage.compression_level == 4  # env beats the file inside a section ...
    assert s.storage.compression == "gzip"  # ... while the file's other keys still apply
    assert Settings(log_level="DEBUG").log_level == "DEBUG"  # keywords beat both


def test_unknown_key_in_toml_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = write_toml(tmp_path / "bad.toml", "[storage]\ncompresion = 'zstd'\n")
    monkeypatch.setenv("QV_CONFIG_FILE", str(cfg))
    with pytest.raises(ConfigurationError, match=r"storage.compresion: Extra inputs.*bad.toml"):
        Settings()


def test_data_dir_expands_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings(data_dir=Path("~/lake")).data_dir == tmp_path / "lake"
    assert Settings().with_data_dir("~/other").data_dir == tmp_path / "other"


def test_with_data_dir_returns_a_copy_and_keeps_other_values() -> None:
    s = Settings(log_level="ERROR", storage=StorageSettings(compression_level=9))
    moved = s.with_data_dir("/tmp/elsewhere")
    assert moved.data_dir == Path("/tmp/elsewhere")
    assert moved.log_level == "ERROR"
    assert moved.storage.compression_level == 9
    assert s.data_dir == Path("qv-data")


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.log_level = "DEBUG"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        s.storage.compression_level = 5  # type: ignore[misc]
    assert s.log_level == "WARNING"
    assert s.storage.compression_level == 1


def test_secret_dsn_is_not_leaked_by_repr_str_or_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QV_SERVICES__POSTGRES_DSN", f"postgresql://qv:{SECRET}@db:5432/qv")
    s = Settings()
    assert isinstance(s.services.postgres_dsn, SecretStr)
    assert s.services.postgres_dsn.get_secret_value() == f"postgresql://qv:{SECRET}@db:5432/qv"
    for text in (repr(s), str(s), repr(s.services), str(s.summary())):
        assert SECRET not in text
    assert s.summary()["services"]["postgres_dsn"] == "**********"


def test_summary_is_plain_json_data() -> None:
    summary = Settings(data_dir=Path("/data/qv")).summary()
    assert summary["data_dir"] == "/data/qv"
    assert summary["storage"]["compression"] == "zstd"
    assert summary["ingest"]["calendar"] == "XNYS"


def test_a_named_config_file_that_does_not_exist_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from quantivista.errors import ConfigurationError

    monkeypatch.setenv("QV_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match="QV_CONFIG_FILE"):
        Settings()
