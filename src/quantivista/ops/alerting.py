"""Alerting without Prometheus: the same rules (ops/alerts.yml) evaluated in-process.

The embedded default has no Prometheus and no Alertmanager, so a service with
`alerting.enabled` samples its own registries every `interval_s`, evaluates each rule with
`ops.promql` (pending for the rule's `for`, then firing), and sends one notification when an
alert fires and one when it resolves (again every `repeat_s` while it keeps firing) to a
webhook (Alertmanager's JSON) and/or by e-mail. A deployment with Prometheus loads the same
file (deploy/prometheus/alerts.yml links to it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import smtplib
import ssl
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml
from prometheus_client import CollectorRegistry

from quantivista.clock import Clock, SystemClock
from quantivista.config import AlertingSettings
from quantivista.errors import ConfigurationError
from quantivista.ops import metrics
from quantivista.ops.promql import History, Labels, Vector, evaluate, labels_of, parse, unsupported

__all__ = [
    "Alert",
    "Alerter",
    "EmailNotifier",
    "Notifier",
    "Rule",
    "WebhookNotifier",
    "load_rules",
    "render",
    "start_alerting",
]

log = logging.getLogger(__name__)
RULES_FILE = Path(__file__).with_name("alerts.yml")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_s(text: str | None) -> float:
    """Return a Prometheus duration ("5m", "30s") in seconds."""
    if not text:
        return 0.0
    hit = _DURATION.match(text.strip())
    if hit is None:
        raise ConfigurationError("not a duration", duration=text)
    return float(hit.group(1)) * _UNITS[hit.group(2)]


@dataclass(frozen=True)
class Rule:
    """One alerting rule."""

    name: str
    expr: str
    for_s: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


def load_rules(path: Path | None = None) -> list[Rule]:
    """Read a Prometheus rule file; an expression the evaluator lacks fails here, not later."""
    source = path or RULES_FILE
    document = yaml.safe_load(source.read_text())
    rules = []
    for group in document.get("groups", []):
        for item in group.get("rules", []):
            if "alert" not in item:
                continue  # recording rules are Prometheus' business
            expr = str(item["expr"]).strip()
            parse(expr)
            missing = unsupported(expr)
            if missing:
                raise ConfigurationError(
                    "the in-process alerting cannot evaluate this rule",
                    alert=item["alert"], unsupported=", ".join(missing), file=str(source),
                )  # fmt: skip
            rules.append(
                Rule(
                    item["alert"], expr, duration_s(item.get("for")),
                    {k: str(v) for k, v in (item.get("labels") or {}).items()},
                    {k: str(v) for k, v in (item.get("annotations") or {}).items()},
                )
            )  # fmt: skip
    return rules


# -- Prometheus' template subset --------------------------------------------------------------
_TEMPLATE = re.compile(r"\{\{\s*\$(labels\.(\w+)|value)\s*(\|\s*(\w+)\s*)?\}\}")


def format_value(value: float) -> str:
    """Return `value` as Go's %v prints a float64 (2 -> "2", 0.9 -> "0.9")."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def humanize_duration(value: float) -> str:
    """Return seconds as Prometheus' humanizeDuration does ("30m 0s", "2.485s", "120ms")."""
    if value == 0:
        return "0s"
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v >= 1:
        whole = int(v)
        days, hours = whole // 86400, whole // 3600 % 24
        minutes, seconds = whole // 60 % 60, whole % 60
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{v:.4g}s"
    for unit, scale in (("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
        if v * scale >= 1 or unit == "ns":
            return f"{sign}{v * scale:.4g}{unit}"
    return f"{sign}{v}s"  # unreachable: ns catches the rest


def render(template: str, labels: dict[str, str], value: float) -> str:
    """Fill `{{ $labels.x }}`, `{{ $value }}` and `{{ $value | humanizeDuration }}`."""

    def fill(hit: re.Match[str]) -> str:
        if hit.group(2) is not None:
            return labels.get(hit.group(2), "")
        if hit.group(4) == "humanizeDuration":
            return humanize_duration(value)
        if hit.group(4) == "humanize":
            return f"{value:.4g}"
        return format_value(value)

    return _TEMPLATE.sub(fill, template)


# -- alerts and their notifications -----------------------------------------------------------
@dataclass
class Alert:
    """One alert instance: a rule and one label set of its result."""

    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    active_at: datetime
    state: str = "pending"  # pending, firing, resolved
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    notified_at: datetime | None = None

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self.labels, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    def as_alertmanager(self) -> dict[str, Any]:
        """Return the alert as one entry of an Alertmanager webhook's `alerts`."""
        return {
            "status": "resolved" if self.state == "resolved" else "firing",
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": (self.fired_at or self.active_at).isoformat(),
            "endsAt": self.resolved_at.isoformat() if self.resolved_at else "0001-01-01T00:00:00Z",
            "fingerprint": self.fingerprint,
        }


class Notifier(Protocol):
    """Sends alerts that fired or resolved."""

    name: str

    def send(self, alerts: Sequence[Alert]) -> None: ...


class WebhookNotifier:
    """POSTs Alertmanager's webhook JSON (version 4) for each alert group."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, verify: bool | str = True) -> None:
        self.name = "webhook"
        self.url = url
        self._client = httpx.Client(timeout=timeout_s, verify=verify)

    def send(self, alerts: Sequence[Alert]) -> None:
        first = alerts[0]
        body = {
            "version": "4",
            "receiver": "quantivista",
            "status": "resolved" if all(a.state == "resolved" for a in alerts) else "firing",
            "groupLabels": {"alertname": first.rule},
            "commonLabels": dict(set.intersection(*(set(a.labels.items()) for a in alerts))),
            "externalURL": "",
            "alerts": [a.as_alertmanager() for a in alerts],
        }
        self._client.post(self.url, json=body).raise_for_status()

    def close(self) -> None:
        self._client.close()


class EmailNotifier:
    """Sends one e-mail per alert group over SMTP (optionally STARTTLS and login)."""

    def __init__(self, settings: AlertingSettings) -> None:
        self.name = "email"
        self.settings = settings

    def send(self, alerts: Sequence[Alert]) -> None:
        s = self.settings
        status = "RESOLVED" if all(a.state == "resolved" for a in alerts) else "FIRING"
        message = EmailMessage()
        message["From"] = s.email_from
        message["To"] = ", ".join(s.email_to)
        extra = f" ({len(alerts)} alerts)" if len(alerts) > 1 else ""
        labels = " ".join(f"{k}={v}" for k, v in sorted(alerts[0].labels.items())
                          if k != "alertname")  # fmt: skip
        message["Subject"] = f"[{status}] {alerts[0].rule} {labels}{extra}".strip()
        lines = []
        for alert in alerts:
            lines.append(f"{alert.state.upper()}: {alert.annotations.get('summary', alert.rule)}")
            if "description" in alert.annotations:
                lines.append(alert.annotations["description"])
            lines.append(
                "labels: " + ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
            )
            lines.append(f"since: {(alert.fired_at or alert.active_at).isoformat()}")
            if alert.resolved_at is not None:
                lines.append(f"resolved: {alert.resolved_at.isoformat()}")
            lines.append("")
        message.set_content("\n".join(lines))
        assert s.smtp_host is not None
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username and s.smtp_password is not None:
                smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
            smtp.send_message(message)


class Alerter:
    """Samples registries, evaluates rules, and notifies on firing and on resolve."""

    def __init__(
        self,
        rules: Iterable[Rule],
        registries: Iterable[CollectorRegistry],
        notifiers: Iterable[Notifier],
        *,
        clock: Clock | None = None,
        target: dict[str, str] | None = None,
        repeat_s: float = 4 * 3600.0,
    ) -> None:
        self.rules = list(rules)
        self.registries = list(registries)
        self.notifiers = list(notifiers)
        self.clock: Clock = clock or SystemClock()
        self.target = target or {"job": "quantivista", "instance": "local"}
        self.repeat_s = repeat_s
        self.history = History(keep_s=3600.0)
        self.alerts: dict[tuple[str, Labels], Alert] = {}

    # -- sampling ------------------------------------------------------------------------------
    def scrape(self) -> Vector:
        """Return every sample of the registries, with this process's target labels."""
        out: Vector = {labels_of({"__name__": "up", **self.target}): 1.0}
        for registry in self.registries:
            for family in registry.collect():
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    labels = {"__name__": sample.name, **self.target, **sample.labels}
                    out[labels_of(labels)] = float(sample.value)
        return out

    def add_samples(self, t: datetime, samples: Vector) -> None:
        """Keep one scrape (used by `step`, and by tests that replay series)."""
        self.history.add(t.timestamp(), samples)

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, now: datetime) -> list[Alert]:
        """Evaluate every rule at `now`; return the alerts that changed to firing or resolved
        (or are due a repeat), marking them notified."""
        changed: list[Alert] = []
        t = now.timestamp()
        for rule in self.rules:
            result = evaluate(rule.expr, self.history, t)
            vector = result if isinstance(result, dict) else {}
            seen = set()
            for key, value in vector.items():
                labels = {k: v for k, v in key if k != "__name__"}
                labels.update(rule.labels)
                labels["alertname"] = rule.name
                ident = (rule.name, labels_of(labels))
                seen.add(ident)
                alert = self.alerts.get(ident)
                annotations = {k: render(v, labels, value) for k, v in rule.annotations.items()}
                if alert is None or alert.state == "resolved":
                    alert = Alert(rule.name, labels, annotations, value, now)
                    self.alerts[ident] = alert
                alert.value, alert.annotations = value, annotations
                if (
                    alert.state == "pending"
                    and (now - alert.active_at).total_seconds() >= rule.for_s
                ):
                    alert.state, alert.fired_at = "firing", now
                if alert.state == "firing" and (
                    alert.notified_at is None
                    or (now - alert.notified_at).total_seconds() >= self.repeat_s
                ):
                    alert.notified_at = now
                    changed.append(alert)
            for ident, alert in list(self.alerts.items()):
                if ident[0] != rule.name or ident in seen:
                    continue
                if alert.state == "firing":
                    alert.state, alert.resolved_at = "resolved", now
                    changed.append(alert)
                del self.alerts[ident]
        for rule in self.rules:
            firing = sum(
                1 for a in self.alerts.values() if a.rule == rule.name and a.state == "firing"
            )
            metrics.ALERTS_FIRING.labels(rule.name).set(firing)
        return changed

    def firing(self) -> list[Alert]:
        """Return the alerts firing now."""
        return [a for a in self.alerts.values() if a.state == "firing"]

    def notify(self, alerts: Sequence[Alert]) -> None:
        """Send changed alerts, grouped by rule and status, to every notifier."""
        groups: dict[tuple[str, str], list[Alert]] = {}
        for alert in alerts:
            groups.setdefault((alert.rule, alert.state), []).append(alert)
        for group in groups.values():
            for notifier in self.notifiers:
                try:
                    notifier.send(group)
                    outcome = "sent"
                except Exception as exc:  # a mail server down must not stop the evaluations
                    log.warning("alert notification by %s failed: %s", notifier.name, exc)
                    outcome = "failed"
                metrics.ALERT_NOTIFICATIONS.labels(notifier.name, outcome).inc()

    def step(self) -> list[Alert]:
        """Scrape, evaluate and notify once; return what was notified."""
        now = self.clock.now()
        self.add_samples(now, self.scrape())
        changed = self.evaluate(now)
        if changed:
            self.notify(changed)
        return changed

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Step every `interval_s` until `stop` is set."""
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # logged; the next step tries again
                log.exception("alert evaluation failed")
            stop.wait(interval_s)


def notifiers_from(settings: AlertingSettings) -> list[Notifier]:
    """Return the notifiers `settings` configure."""
    out: list[Notifier] = [WebhookNotifier(url) for url in settings.webhook_urls]
    if settings.smtp_host and settings.email_to:
        out.append(EmailNotifier(settings))
    return out


def start_alerting(
    settings: AlertingSettings,
    registries: Iterable[CollectorRegistry],
    *,
    service: str,
    stop: threading.Event,
    clock: Clock | None = None,
) -> Alerter | None:
    """Start the in-process alerting thread when `settings.enabled`; None otherwise."""
    if not settings.enabled:
        return None
    alerter = Alerter(
        load_rules(settings.rules_file),
        [metrics.REGISTRY, *registries],
        notifiers_from(settings),
        clock=clock,
        target={"job": f"qv-{service}", "instance": "local"},
        repeat_s=settings.repeat_s,
    )
    threading.Thread(
        target=alerter.run, args=(stop, settings.interval_s), name="qv-alerting", daemon=True
    ).start()
    return alerter
