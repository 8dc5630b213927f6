"""Recorded fixtures and settings shared by the simulator tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from quantivista.config import SimulatorServerSettings

# copies of ../shared/fixtures/providers kept in the repository, so a clone tests on its own
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "providers"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="recorded fixtures not found")

SETTINGS = SimulatorServerSettings(
    seed=7, universe_size=5, as_of="2026-11-23", ws_trade_interval_s=0.02, ws_ping_interval_s=0.1
)


def fixture_json(provider: str, name: str) -> Any:
    """Load a recorded body; node-yahoo-finance2 recordings wrap it in response.bodyJson."""
    data = json.loads((FIXTURES / provider / name).read_text())
    if isinstance(data, dict) and "response" in data and "bodyJson" in data["response"]:
        return data["response"]["bodyJson"]
    return data


def fixture_yaml_body(provider: str, name: str) -> Any:
    """Load the first response body of a VCR cassette as JSON."""
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((FIXTURES / provider / name).read_text())
    return json.loads(data["http_interactions"][0]["response"]["body"]["string"])


def shape(value: Any) -> Any:
    """Return the structure of a JSON value: dict keys, list element shape, scalar kinds."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "string"
