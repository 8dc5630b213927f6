"""deploy/prometheus: promtool checks the config and rules, runs the rules' unit tests, and a
real Prometheus on 127.0.0.1 scrapes a real `qv serve` and answers a query for its metric."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import services_required
from deploy_files import PROMETHEUS, alert_expressions, code_exports, dashboard_expressions
from quantivista.ops.promql import metric_names


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian package prometheus; .ci/run installs it)"
        if services_required():
            pytest.fail(f"{reason}; QV_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
        pytest.skip(reason)
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_binary("promtool"), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def test_promtool_accepts_the_config_and_the_rules() -> None:
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 13 rules found" in rules.stdout


def test_the_alert_rules_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "tests/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expectation_fails_the_rule_tests(tmp_path: Path) -> None:
    text = (PROMETHEUS / "tests" / "alerts_test.yml").read_text()
    broken = tmp_path / "broken_test.yml"
    broken.write_text(
        text.replace("../alerts.yml", str(PROMETHEUS / "alerts.yml")).replace(
            '"0.99x10"', '"0.90x10"'
        )
    )
    result = _promtool("test", "rules", str(broken))
    assert result.returncode != 0
    assert "QvQualityScoreLow" in result.stdout + result.stderr


def test_every_metric_the_alert_rules_use_is_exported() -> None:
    exported = code_exports()
    used = set().union(*(metric_names(e) for e in alert_expressions()))
    assert used, "no metric found: the parser is broken"
    assert {"qv_breaker_state", "qv_freshness_last_bar_timestamp_seconds"} <= used
    assert sorted(used - exported) == []


def test_the_name_parser_sees_through_promql() -> None:
    expr = 'sum by (provider) (rate(qv_a_total{x="b c"}[5m])) / on (x) qv_b > 0.5 and up == 0'
    assert metric_names(expr) == {"qv_a_total", "qv_b", "up"}
    assert "qv_not_a_metric" not in code_exports()


# -- a real Prometheus scraping a real `qv serve` ---------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, deadline_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {deadline_s} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def qv_serve(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "QV_DATA_DIR": str(tmp_path / "qv"), "QV_LOG_LEVEL": "WARNING"}
    qv = Path(sys.executable).with_name("qv")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [str(qv), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc, log)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


def test_prometheus_scrapes_qv_serve_and_answers_a_query(tmp_path: Path, qv_serve: str) -> None:
    prometheus = _binary("prometheus")
    port = _free_port()
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    config.pop("alerting")
    config["scrape_configs"] = [{"job_name": "qv-api", "static_configs": [{"targets": [qv_serve]}]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    httpx.get(f"http://{qv_serve}/api/v1/health/nothing-here")  # one counted API request
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/-/ready", 60, proc, log)
        found: list[dict[str, object]] = []
        end = time.monotonic() + 60
        while not found and time.monotonic() < end:
            reply = httpx.get(
                f"{base}/api/v1/query", params={"query": 'qv_build_info{service="api"}'}
            )
            found = reply.json()["data"]["result"]
            time.sleep(0.5)
        assert found, "Prometheus never had qv_build_info from qv serve"
        assert found[0]["metric"]["job"] == "qv-api"  # type: ignore[index]
        up = httpx.get(f"{base}/api/v1/query", params={"query": 'up{job="qv-api"}'}).json()
        assert up["data"]["result"][0]["value"][1] == "1"
        requests = httpx.get(
            f"{base}/api/v1/query", params={"query": "sum(qv_api_requests_total)"}
        ).json()["data"]["result"]
        assert requests and float(requests[0]["value"][1]) >= 1
        rules = httpx.get(f"{base}/api/v1/rules").json()["data"]["groups"]
        assert sum(len(g["rules"]) for g in rules) == 13  # the shipped rules load
        for expr in dashboard_expressions() + alert_expressions():  # Prometheus runs each one
            answer = httpx.get(f"{base}/api/v1/query", params={"query": expr}).json()
            assert answer["status"] == "success", (expr, answer)
    finally:
        _stop(proc)
