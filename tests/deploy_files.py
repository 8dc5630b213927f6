"""The deployment files' PromQL, for the tests of deploy/ (importable: tests/ is on the path)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from quantivista.acquisition.analytics import ProviderAnalytics
from quantivista.api.metrics import ApiMetrics
from quantivista.ops.metrics import exported_names

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"


def code_exports() -> set[str]:
    """Return every metric name the platform's code exports (and Prometheus' own `up`)."""
    return exported_names(ProviderAnalytics().registry, ApiMetrics().registry) | {"up"}


def alert_expressions() -> list[str]:
    """Return every PromQL expression of the alert rules."""
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    """Return every PromQL expression of the Grafana dashboards."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        out += [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return out
