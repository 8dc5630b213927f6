"""In-process alerting: the promtool rule tests replayed through the evaluator, webhook and
SMTP notifications to real local servers, de-duplication and resolve messages."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from prometheus_client import CollectorRegistry, Gauge

from quantivista.clock import TestClock
from quantivista.config import AlertingSettings
from quantivista.errors import ConfigurationError
from quantivista.ops import metrics
from quantivista.ops.alerting import (
    Alerter,
    EmailNotifier,
    WebhookNotifier,
    humanize_duration,
    load_rules,
    render,
)
from quantivista.ops.promql import History, evaluate, labels_of, parse

RULE_TESTS = Path(__file__).resolve().parents[2] / "deploy/prometheus/tests/alerts_test.yml"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def expand(values: str) -> list[float | None]:
    """Expand promtool's series notation ("0+10x3 5x1 _") into values (None: no sample)."""
    out: list[float | None] = []
    for token in values.split():
        hit = re.fullmatch(r"(_|-?[\d.]+)(?:([+-][\d.]+))?(?:x(\d+))?", token)
        assert hit, token
        start, step, times = hit.group(1), hit.group(2), hit.group(3)
        count = int(times) + 1 if times is not None else 1
        if start == "_":
            out += [None] * count
            continue
        out += [float(start) + i * float(step or 0) for i in range(count)]
    return out


def series_labels(selector: str) -> dict[str, str]:
    node = parse(selector)
    labels = {m.name: m.value for m in node.matchers.matchers}  # type: ignore[attr-defined]
    return {"__name__": node.name, **labels}  # type: ignore[attr-defined]


CASES = yaml.safe_load(RULE_TESTS.read_text())["tests"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"][:40] for c in CASES])
def test_the_promtool_rule_tests_pass_in_process(case: dict[str, Any]) -> None:
    alerter = Alerter(load_rules(), [], [])
    step = 60
    series = [(series_labels(s["series"]), expand(s["values"])) for s in case["input_series"]]
    checks: dict[int, list[dict[str, Any]]] = {}
    for check in case["alert_rule_test"]:
        seconds = int(check["eval_time"].removesuffix("m")) * 60
        checks.setdefault(seconds, []).append(check)
    for t in range(0, max(checks) + 1, step):
        now = EPOCH + timedelta(seconds=t)
        samples = {
            labels_of(labels): v
            for labels, values in series
            if t // step < len(values) and (v := values[t // step]) is not None
        }
        alerter.add_samples(now, samples)
        alerter.evaluate(now)
        for check in checks.get(t, []):
            got = sorted(
                (json.dumps(a.labels, sort_keys=True), a.annotations)
                for a in alerter.firing()
                if a.rule == check["alertname"]
            )
            want = sorted(
                (
                    json.dumps({**e["exp_labels"], "alertname": check["alertname"]},
                               sort_keys=True),
                    e.get("exp_annotations", {}),
                )
                for e in check["exp_alerts"]
            )  # fmt: skip
            assert got == want, (check["alertname"], check["eval_time"])


def test_the_evaluator_matches_prometheus_on_rate_and_quantiles() -> None:
    history = History()
    for i in range(6):  # a counter +60 a minute, one reset
        value = 60.0 * i if i != 4 else 10.0
        history.add(60.0 * i, {labels_of({"__name__": "c_total", "a": "x"}): value})
    rate = evaluate("rate(c_total[5m])", history, 300.0)
    assert isinstance(rate, dict)
    # samples at 60..300 s: 60, 120, 180, 10 (a reset), 300 -> raw increase 240 + 180 = 420,
    # extrapolated towards zero (34.3 s before the first sample): 420 * 274.3 / 240 = 480
    [value] = rate.values()
    assert value == pytest.approx(480 / 300)
    assert evaluate("time()", history, 300.0) == 300.0
    assert evaluate("sum(c_total) > bool 1000", history, 300.0) == {(): 0.0}
    assert evaluate("c_total unless on (a) c_total", history, 300.0) == {}


def test_render_fills_labels_and_humanizes() -> None:
    text = "{{ $labels.provider }} at {{ $value }}, {{ $value | humanizeDuration }}"
    assert render(text, {"provider": "yahoo"}, 1800.0) == "yahoo at 1800, 30m 0s"
    assert humanize_duration(2.4848) == "2.485s"
    assert humanize_duration(0.12) == "120ms"
    assert humanize_duration(90061) == "1d 1h 1m 1s"


def test_a_rule_the_evaluator_lacks_fails_at_load(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "X", "expr": 'label_replace(up, "a", "b", "c", "d") > 0'}]}]}))  # fmt: skip
    with pytest.raises(ConfigurationError, match="label_replace"):
        load_rules(rules)


# -- notifications to real local servers ---------------------------------------------------
class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    handler = type("Hook", (_Hook,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", handler.received  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(BytesParser().parsebytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Inbox]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


def test_fire_once_then_resolve_by_webhook_and_email(
    webhook: tuple[str, list[dict[str, Any]]], smtp: tuple[int, _Inbox]
) -> None:
    url, received = webhook
    port, inbox = smtp
    registry = CollectorRegistry()
    score = Gauge("qv_quality_score", "score", ["source"], registry=registry)
    score.labels("vendor-x").set(0.5)
    score.labels("vendor-y").set(0.99)
    settings = AlertingSettings(
        smtp_host="127.0.0.1", smtp_port=port, email_to=["ops@example.org"],
        email_from="qv@example.org",
    )  # fmt: skip
    rules = [r for r in load_rules() if r.name == "QvQualityScoreLow"]
    clock = TestClock(datetime(2026, 1, 5, 15, tzinfo=UTC))
    alerter = Alerter(
        rules, [registry], [WebhookNotifier(url), EmailNotifier(settings)], clock=clock
    )
    sent = metrics.ALERT_NOTIFICATIONS.labels("webhook", "sent")._value.get()
    assert alerter.step() == []  # pending: `for: 5m`
    clock.advance(300)
    [fired] = alerter.step()
    # `min by (source)` keeps only the source: the target's job and instance are gone
    assert fired.labels == {"alertname": "QvQualityScoreLow", "severity": "warning",
                            "source": "vendor-x"}  # fmt: skip
    clock.advance(60)
    assert alerter.step() == []  # still firing: not sent again
    score.labels("vendor-x").set(0.97)
    clock.advance(60)
    [resolved] = alerter.step()
    assert resolved.state == "resolved"
    assert [r["status"] for r in received] == ["firing", "resolved"]
    assert received[0]["alerts"][0]["annotations"]["summary"] == (
        "Quality score of vendor-x is 0.5 (< 0.95)"
    )
    assert received[1]["alerts"][0]["endsAt"].startswith("2026-01-05T15:07")
    subjects = [m["Subject"] for m in inbox.messages]
    assert subjects == [
        "[FIRING] QvQualityScoreLow severity=warning source=vendor-x",
        "[RESOLVED] QvQualityScoreLow severity=warning source=vendor-x",
    ]
    assert inbox.messages[0]["To"] == "ops@example.org"
    assert metrics.ALERT_NOTIFICATIONS.labels("webhook", "sent")._value.get() == sent + 2
    assert (
        metrics.REGISTRY.get_sample_value("qv_alerts_firing", {"alertname": "QvQualityScoreLow"})
        == 0
    )


def test_a_failing_notifier_is_counted_and_evaluation_goes_on() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])
    registry = CollectorRegistry()
    Gauge("qv_consumer_lag_messages", "lag", ["consumer", "topic"], registry=registry).labels(
        "c", "t"
    ).set(50_000)
    rules = [r for r in load_rules() if r.name == "QvConsumerLag"]
    clock = TestClock(datetime(2026, 1, 5, 15, tzinfo=UTC))
    alerter = Alerter(rules, [registry], [WebhookNotifier(f"http://127.0.0.1:{closed}/")],
                      clock=clock)  # fmt: skip
    failed = metrics.ALERT_NOTIFICATIONS.labels("webhook", "failed")._value.get()
    alerter.step()
    clock.advance(300)
    [fired] = alerter.step()
    assert fired.state == "firing"
    assert metrics.ALERT_NOTIFICATIONS.labels("webhook", "failed")._value.get() == failed + 1


def test_qv_serve_alerts_in_process_when_enabled(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    import time

    import uvicorn

    from quantivista.api.app import create_app
    from quantivista.config import Settings

    url, received = webhook
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{
        "alert": "QvApiUp", "expr": 'up{job="qv-api"} == 1',
        "annotations": {"summary": "{{ $labels.job }} is up"}}]}]}))  # fmt: skip
    settings = Settings(
        data_dir=tmp_path / "qv",
        alerting={"enabled": True, "rules_file": rules, "interval_s": 0.1, "webhook_urls": [url]},
    )  # type: ignore[arg-type]
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.6)  # several more evaluations while it keeps firing
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    assert received, "the API's alerting never called the webhook"
    assert received[0]["alerts"][0]["labels"]["alertname"] == "QvApiUp"
    assert received[0]["alerts"][0]["annotations"]["summary"] == "qv-api is up"
    assert len(received) == 1  # fired once, not on every evaluation
