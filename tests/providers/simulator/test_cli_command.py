"""`qv simulate-providers` serves in the foreground and prints its base URLs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import typer

from procs import reap, terminate
from quantivista.cli.commands.providers import rate_windows as _rate_windows
from quantivista.config import RateWindow


def test_simulate_providers_prints_urls_that_answer(tmp_path: Path) -> None:
    qv = Path(sys.executable).parent / "qv"
    proc = subprocess.Popen(
        [
            str(qv),
            "simulate-providers",
            "--port",
            "0",
            "--universe-size",
            "3",
            "--down",
            "yahoo",
            "--free-tier-limits",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip().startswith("stats"):
                break
        urls = {p.split()[0]: p.split()[1] for p in lines[1:] if p.startswith("  ")}
        assert set(urls) >= {"alpha_vantage", "yahoo", "finnhub", "iex_cloud", "polygon"}
        assert httpx.get(urls["yahoo"] + "/v8/finance/chart/ANY", timeout=5).status_code == 503
        polygon = urls["polygon"] + "/v2/aggs/ticker/ANY/range/1/day/2024-01-01/2024-01-31"
        codes = [
            httpx.get(polygon, params={"apiKey": "k"}, timeout=5).status_code for _ in range(6)
        ]
        assert codes == [200] * 5 + [429]  # Polygon's free tier: 5 calls a minute
        stats = httpx.get(urls["stats"], timeout=5).json()
        assert stats["providers"]["yahoo"]["faults"] == {"down": 1}
        assert stats["providers"]["polygon"]["violations"] == 1
    finally:
        terminate(proc)
        reap(proc)  # closes its pipe


def test_rate_limit_option_parses_calls_per_seconds() -> None:
    assert _rate_windows(["5/60", "25/86400"]) == (
        RateWindow(calls=5, seconds=60),
        RateWindow(calls=25, seconds=86400),
    )
    with pytest.raises(typer.BadParameter, match="CALLS/SECONDS"):
        _rate_windows(["five"])
