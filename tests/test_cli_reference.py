"""`qv actions`, `qv instruments`, `qv benchmark` and `qv bars --adjust` end to end."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from quantivista import Platform
from quantivista.cli import app

runner = CliRunner()


def _seed(root: Path, make_bars) -> None:  # type: ignore[no-untyped-def]
    with Platform.open(root) as p:
        bars = make_bars(["AAA", "BBB"], 30, start="2024-01-02")
        p.write_bars(bars, source="test")
        p.write_actions(
            pl.DataFrame(
                {
                    "symbol": ["AAA", "AAA"],
                    "action_type": ["split", "dividend"],
                    "ex_date": [date(2024, 1, 10), date(2024, 1, 20)],
                    "ratio": [2.0, None],
                    "amount": [None, 0.5],
                }
            ),
            provider="test",
        )


def test_actions_and_adjusted_bars(tmp_path: Path, make_bars) -> None:  # type: ignore[no-untyped-def]
    _seed(tmp_path, make_bars)
    out = runner.invoke(app, ["-d", str(tmp_path), "actions", "AAA"])
    assert out.exit_code == 0, out.output
    assert "split" in out.output and "dividend" in out.output
    raw = runner.invoke(app, ["-d", str(tmp_path), "bars", "AAA", "-f", "csv"])
    adj = runner.invoke(
        app, ["-d", str(tmp_path), "bars", "AAA", "-f", "csv", "--adjust", "splits"]
    )
    assert raw.exit_code == adj.exit_code == 0
    first_raw = float(raw.output.splitlines()[1].split(",")[6])
    first_adj = float(adj.output.splitlines()[1].split(",")[6])
    assert first_adj == first_raw / 2
    bad = runner.invoke(app, ["-d", str(tmp_path), "bars", "AAA", "--adjust", "dividends"])
    assert bad.exit_code == 2


def test_instruments_load_and_lookup(tmp_path: Path) -> None:
    csv = tmp_path / "i.csv"
    csv.write_text("instrument_id,symbol,name,isin\nAPPLE,AAPL,Apple,US0378331005\n")
    out = runner.invoke(app, ["-d", str(tmp_path), "instruments", "AAPL", "--load", str(csv)])
    assert out.exit_code == 0, out.output
    assert "US0378331005" in out.output and "APPLE" in out.output
    missing = runner.invoke(app, ["-d", str(tmp_path), "instruments", "ZZZ"])
    assert missing.exit_code == 1


def test_benchmark_against_a_symbol(tmp_path: Path, make_bars) -> None:  # type: ignore[no-untyped-def]
    _seed(tmp_path, make_bars)
    out = runner.invoke(app, ["-d", str(tmp_path), "benchmark", "AAA", "BBB", "--against", "BBB"])
    assert out.exit_code == 0, out.output
    assert "yearly returns" in out.output and "tracking_error" in out.output
