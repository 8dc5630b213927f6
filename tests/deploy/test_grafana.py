"""deploy/grafana: the dashboards are valid provisioning JSON and query only exported metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deploy_files import DEPLOY, code_exports, dashboard_expressions
from quantivista.ops.promql import metric_names, parse

GRAFANA = DEPLOY / "grafana"
BOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def test_the_five_dashboards_are_there_with_unique_uids() -> None:
    assert [p.stem for p in BOARDS] == ["api", "overview", "providers", "quality", "streaming"]
    uids = [json.loads(p.read_text())["uid"] for p in BOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_every_panel_queries_exported_metrics(path: Path) -> None:
    board = json.loads(path.read_text())
    exported = code_exports()
    assert board["panels"], "a dashboard without panels"
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            parse(target["expr"])  # valid PromQL
            used = metric_names(target["expr"])
            assert used, (panel["title"], target["expr"])
            assert sorted(used - exported) == [], (panel["title"], target["expr"])


def test_a_dashboard_naming_an_unknown_metric_would_be_caught() -> None:
    exprs = dashboard_expressions()
    assert len(exprs) >= 30
    assert metric_names("rate(qv_made_up_total[5m])") - code_exports() == {"qv_made_up_total"}


def test_provisioning_points_grafana_at_the_dashboards_and_prometheus() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/quantivista.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["type"] == "prometheus"
