"""The `qv` command line, run in-process with Typer's runner on a temporary data directory."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from quantivista.cli import app, sparkline
from quantivista.providers.simulator import SimulatedMarket

runner = CliRunner()


@pytest.fixture(scope="module")
def symbols() -> list[str]:
    return SimulatedMarket().symbols("2024-06-03")[5:8]  # the default settings' market


def _qv(data: Path, *args: str) -> str:
    result = runner.invoke(app, ["--data-dir", str(data), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_ingest_then_bars_as_csv_returns_what_was_stored(
    tmp_path: Path, symbols: list[str]
) -> None:
    out = _qv(tmp_path, "ingest", *symbols, "--start", "2024-01-01", "--end", "2024-03-31")
    assert "succeeded" in out
    csv = _qv(
        tmp_path, "bars", symbols[0], "--start", "2024-02-01", "--end", "2024-02-29", "-f", "csv"
    )
    frame = pl.read_csv(io.StringIO(csv))
    assert frame.height == 20  # February 2024 had 20 NYSE sessions
    assert frame["symbol"].unique().to_list() == [symbols[0]]
    assert (frame["high"] >= frame["low"]).all()


def test_bars_can_write_parquet_and_draw_a_chart(tmp_path: Path, symbols: list[str]) -> None:
    _qv(tmp_path, "ingest", symbols[0], "--start", "2024-01-01", "--end", "2024-06-30")
    target = tmp_path / "out.parquet"
    _qv(tmp_path, "bars", symbols[0], "-f", "parquet", "-o", str(target))
    assert pl.read_parquet(target).height == 124
    chart = _qv(tmp_path, "bars", symbols[0], "-f", "chart")
    assert symbols[0] in chart and any(c in chart for c in "▁▂▃▄▅▆▇█")
    table = _qv(tmp_path, "bars", symbols[0], "--limit", "4")
    assert "2024-06-28" in table and "2024-01-02" in table


def test_status_jobs_and_quarantine_show_the_store(tmp_path: Path, symbols: list[str]) -> None:
    _qv(tmp_path, "ingest", *symbols[:2], "--start", "2024-01-01", "--end", "2024-01-31")
    status = _qv(tmp_path, "status")
    assert "1d" in status and "42" in status  # 2 symbols x 21 sessions of January 2024
    assert "job-" in _qv(tmp_path, "jobs")
    assert "quarantine is empty" in _qv(tmp_path, "quarantine")


def test_errors_exit_with_code_2_and_a_message(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["--data-dir", str(tmp_path), "ingest", "X", "--start", "2024-01-01", "--end", "bad"]
    )
    assert result.exit_code != 0


def test_demo_ingests_daily_and_minute_bars_and_leaves_data(tmp_path: Path) -> None:
    out = _qv(tmp_path, "demo", "--symbols", "4", "--years", "1", "--sessions", "1")
    assert "daily bars" in out and "1-minute bars" in out
    assert "data quality" in out
    assert (tmp_path / "silver").exists() or any(tmp_path.rglob("*.parquet"))


def test_sparkline_scales_between_min_and_max() -> None:
    line = sparkline([1.0, 2.0, 3.0, 4.0], width=4)
    assert line[0] == "▁" and line[-1] == "█" and len(line) == 4


def test_bars_session_option_adds_the_pre_and_post_market(tmp_path: Path) -> None:
    from quantivista.config import Settings
    from quantivista.platform import Platform
    from quantivista.providers import polygon

    fixture = Path(__file__).parent / "fixtures" / "intraday"
    body = (fixture / "polygon_aggs_QVX_1minute_extended.json").read_bytes()
    minutes = polygon.parse_aggs(body, "QVX", "1m")[0]
    with Platform.from_settings(Settings(data_dir=tmp_path)) as p:
        p.write_bars(minutes.drop("ingested_at", "job_id"), source="polygon")
    day = ["QVX", "--start", "2020-08-31", "--end", "2020-08-31", "-t", "1m", "-f", "csv"]
    regular = pl.read_csv(io.StringIO(_qv(tmp_path, "bars", *day)))
    extended = pl.read_csv(io.StringIO(_qv(tmp_path, "bars", *day, "--session", "extended")))
    assert regular.height == 390 < extended.height
    bad = runner.invoke(app, ["--data-dir", str(tmp_path), "bars", *day, "--session", "pre"])
    assert bad.exit_code != 0 and "session must be" in bad.output
