"""What a new user hit: every bad input and fault gets one clear line and the right exit code."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from quantivista.cli import app
from quantivista.errors import InvalidInputError
from quantivista.platform import Platform
from quantivista.providers.simulator import SimulatedMarket

runner = CliRunner()
SYMBOLS = SimulatedMarket().symbols("2024-06-03")[5:7]  # the default settings' market


def qv(data: Path, *args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, ["--data-dir", str(data), *args], env=env)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "qv"
    qv(root, "ingest", *SYMBOLS, "--start", "2024-01-01", "--end", "2024-03-31")
    return root


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    before = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(before)


# -- 1. error text is printed, not read as markup ------------------------------------------
def test_error_details_in_brackets_survive(store: Path) -> None:
    out = qv(store, "ingest", "AAA", "--start", "2024-01-01", "--end", "2024-01-31",
             "-p", "nosuch", code=2)  # fmt: skip
    assert "unknown provider" in out and "provider='nosuch'" in out


# -- 2. configuration errors: one line, exit 2 ---------------------------------------------
@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[storage]\nbackend = "mongo"\n', "storage.backend: Input should be 'lake' or"),
        ('[storage\nbackend = "lake"\n', "qv.toml is not valid TOML"),
        ('[storag]\nbackend = "lake"\n', "storag: Extra inputs are not permitted"),
    ],
)
def test_a_bad_config_file_is_one_line(workdir: Path, toml: str, expected: str) -> None:
    (workdir / "qv.toml").write_text(toml)
    out = qv(workdir / "d", "status", code=2)
    assert expected in out.replace("\n", " ")
    assert len(out.strip().splitlines()) <= 3


def test_a_missing_config_file_is_named(workdir: Path) -> None:
    out = qv(workdir / "d", "status", code=2, env={"QV_CONFIG_FILE": "/nope"})
    assert "QV_CONFIG_FILE names no file" in out and "/nope" in out


# -- 3. tracebacks become messages ---------------------------------------------------------
def test_end_before_start_is_refused(store: Path, tmp_path: Path) -> None:
    out = qv(store, "ingest", "AAA", "--start", "2024-06-01", "--end", "2024-01-01", code=2)
    assert "end is before start" in out
    assert "end is before start" in qv(store, "bars", SYMBOLS[0], "--start", "2024-06-01",
                                       "--end", "2024-01-01", code=2)  # fmt: skip
    with (
        Platform.open(tmp_path / "p") as p,
        pytest.raises(InvalidInputError, match="end is before start"),
    ):
        p.ingest(["AAA"], "2024-06-01", "2024-01-01")


def test_unwritable_outputs_and_missing_inputs_are_one_line(store: Path, tmp_path: Path) -> None:
    for fmt in ("parquet", "csv", "json"):
        out = qv(store, "bars", SYMBOLS[0], "-f", fmt, "-o", "/nonexistent/dir/x", code=2)
        assert "cannot write /nonexistent/dir/x" in out
    a_file = tmp_path / "somefile.csv"
    a_file.write_text("x")
    assert "is a file" in qv(store, "backup", str(a_file), code=2)
    missing = str(tmp_path / "missing.csv")
    assert "no such file" in qv(store, "quarantine-release", "--corrected", missing, code=2)
    assert "no such file" in qv(store, "instruments", "--load", missing, code=2)


# -- 4. a read-only data directory -----------------------------------------------------------
def test_reads_work_on_a_read_only_mount(store: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a directory read-only")
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    ro = tmp_path / "ro"
    ro.mkdir()
    script = (
        f"mount --bind {copy} {ro} && mount -o remount,ro,bind {ro} && "
        f"{sys.executable} -m quantivista.cli -d {ro} status && "
        f"{sys.executable} -m quantivista.cli -d {ro} bars {SYMBOLS[0]} -f csv"
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120
    )
    if "mount:" in done.stderr and "permission denied" in done.stderr.lower():
        pytest.skip("this machine does not allow mounts in a namespace")
    assert done.returncode == 0, done.stderr
    assert "readonly" not in done.stderr and "rows in quarantine" in done.stdout
    csv = done.stdout[done.stdout.index("symbol,") :]
    assert pl.read_csv(io.StringIO(csv)).height == 61


# -- 6. archived bars stay visible without the setting -------------------------------------
def test_archived_bars_stay_visible_without_the_archive_setting(tmp_path: Path) -> None:
    root, archive = tmp_path / "qv", tmp_path / "cold"
    qv(root, "ingest", SYMBOLS[0], "--start", "2022-01-01", "--end", "2024-03-31")
    before = pl.read_csv(io.StringIO(qv(root, "bars", SYMBOLS[0], "-f", "csv"))).height
    env = {"QV_STORAGE__ARCHIVE_URL": f"file://{archive}", "QV_STORAGE__HOT_DAYS": '{"1d": 400}'}
    assert "archived to" in qv(root, "retention", env=env)
    after = pl.read_csv(io.StringIO(qv(root, "bars", SYMBOLS[0], "-f", "csv"))).height
    assert after == before > 500


# -- 7, 8. unknown benchmark symbols; negative limits -------------------------------------
def test_benchmark_names_unknown_symbols(store: Path) -> None:
    out = qv(store, "benchmark", SYMBOLS[0], "NOSUCH", code=2)
    assert "no bars stored" in out and "NOSUCH" in out
    out = qv(store, "benchmark", *SYMBOLS, "--against", "NOSUCH", code=2)
    assert "NOSUCH" in out


def test_negative_limits_are_refused(store: Path) -> None:
    out = qv(store, "bars", SYMBOLS[0], "--limit", "-5", code=2)
    assert "limit" in out.lower()


# -- 9. status counts files per tier -------------------------------------------------------
def test_status_counts_the_files_on_disk(store: Path) -> None:
    out = qv(store, "status")
    on_disk = len(list((store / "silver" / "bars").rglob("data.*")))
    assert f"hot: {on_disk} files" in out.replace("\n", " ")


# -- 10. quarantine shows the reason -----------------------------------------------------
def test_quarantine_lists_the_reason(tmp_path: Path) -> None:
    root = tmp_path / "qv"
    frame = pl.DataFrame(
        {"symbol": ["AAA"], "timeframe": ["1d"], "ts": ["2024-01-02"], "open": [1.0],
         "high": [0.5], "low": [1.0], "close": [1.0], "volume": [10.0]}
    ).with_columns(pl.col("ts").str.to_datetime(time_zone="UTC"))  # fmt: skip
    with Platform.open(root) as p:
        p.write_bars(frame)
    rows = json.loads(qv(root, "quarantine", "-f", "json"))
    assert rows[0]["rule"] == "ohlc_inconsistent" and rows[0]["reason"]
    assert "reason" in qv(root, "quarantine")


# -- 12. qv sql writes nothing unless asked ------------------------------------------------
def test_sql_is_read_only_by_default(store: Path, tmp_path: Path) -> None:
    target = tmp_path / "x.csv"
    out = qv(store, "sql", f"COPY (SELECT 1) TO '{target}'", code=2)
    assert "read-only" in out and not target.exists()
    qv(store, "sql", f"COPY (SELECT 1 AS one) TO '{target}'", "--allow-writes")
    assert target.read_text().startswith("one")


# -- 13. a typo in -d does not make a new store ------------------------------------------
def test_reading_commands_refuse_a_directory_without_a_store(tmp_path: Path) -> None:
    typo = tmp_path / ("deep-" * 20) / "qv-dta"  # a long path: errors are not hard-wrapped
    for args in (["status"], ["bars", "AAA"], ["jobs"], ["quarantine"], ["sql", "SELECT 1"]):
        out = qv(typo, *args, code=2)
        assert f"{typo} holds no QuantiVista store" in out
    assert not typo.exists()


# -- 14. failed jobs: no score, non-zero exit ----------------------------------------------
def test_a_job_whose_every_symbol_is_unknown_fails(tmp_path: Path) -> None:
    out = qv(tmp_path / "qv", "ingest", "NOSUCHA", "NOSUCHB", "--start", "2024-01-01",
             "--end", "2024-01-31", code=1)  # fmt: skip
    assert out.startswith("failed") or "\nfailed" in out
    assert "quality score -" in out


# -- 15. machine-readable output -------------------------------------------------------------
@pytest.mark.parametrize("command", ["status", "jobs", "quarantine", "providers", "instruments"])
def test_listings_print_json_and_csv(store: Path, command: str) -> None:
    parsed = json.loads(qv(store, command, "-f", "json"))
    assert isinstance(parsed, list | dict)
    qv(store, command, "-f", "csv")


def test_quality_and_actions_print_json(store: Path) -> None:
    assert json.loads(qv(store, "quality", SYMBOLS[0], "-f", "json"))[0]["symbol"] == SYMBOLS[0]
    job = json.loads(qv(store, "jobs", "-f", "json"))[0]["job_id"]
    assert json.loads(qv(store, "quality", job, "-f", "json"))["job_id"] == job


def test_bars_takes_several_symbols_and_reports_files(store: Path, tmp_path: Path) -> None:
    csv = pl.read_csv(io.StringIO(qv(store, "bars", *SYMBOLS, "-f", "csv")))
    assert sorted(csv["symbol"].unique().to_list()) == sorted(SYMBOLS)
    target = tmp_path / "b.csv"
    assert f"wrote {csv.height:,} bars to" in qv(store, "bars", *SYMBOLS, "-f", "csv", "-o",
                                                 str(target))  # fmt: skip
    table = qv(store, "bars", SYMBOLS[0], "--limit", "4")
    assert "2024-01-02 " in table and "00:00:00" not in table  # daily bars: the date


# -- 16. the effective settings ------------------------------------------------------------
def test_qv_config_masks_secrets(tmp_path: Path) -> None:
    env = {"QV_PROVIDERS__POLYGON__API_KEY": "s3cr3t-key"}
    out = qv(tmp_path, "config", env=env)
    assert "providers.polygon.api_key" in out and "s3cr3t" not in out
    values = json.loads(qv(tmp_path, "config", "-f", "json", env=env))
    assert values["providers"]["polygon"]["api_key"] == "**********"
    assert values["storage"]["backend"] == "lake"


def test_the_same_ingest_twice_does_not_double_the_quarantine(tmp_path: Path) -> None:
    env = {"QV_SIMULATOR__FAULT_RATE": "0.02"}
    args = ("ingest", *SYMBOLS, "--start", "2023-01-01", "--end", "2024-03-31")
    qv(tmp_path, *args, env=env)
    first = json.loads(qv(tmp_path, "quarantine", "-f", "json"))
    qv(tmp_path, *args, env=env)
    again = json.loads(qv(tmp_path, "quarantine", "-f", "json"))
    assert len(first) > 5 and len(again) == len(first)
