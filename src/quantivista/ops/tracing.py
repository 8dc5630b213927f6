"""Tracing with OpenTelemetry: pipeline stages, API requests, and context across the bus.

Spans: `ingest.batch` with children `acquire`, `normalize`, `validate`, `store`, `publish`
(`pipeline.write` for bars written directly); `HTTP <method> <route>` per API request (a
W3C `traceparent` header continues the caller's trace). An event's envelope carries the
publisher's context in its `headers` (`inject`), and a consumer in another process starts
its span as the publisher's child (`consume`).

Without `configure` (or with no `tracing.otlp_endpoint`) the API's no-op tracer is used and
a span costs about a microsecond. `configure` installs the SDK with an OTLP/HTTP exporter
(Jaeger, Tempo and the OTel Collector take it) for the service's process.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from quantivista.config import TracingSettings

__all__ = ["configure", "consume", "extract", "inject", "span", "tracer"]

_configured: dict[str, Any] = {}


def tracer() -> trace.Tracer:
    """Return the platform's tracer (of whatever provider is installed now)."""
    return trace.get_tracer("quantivista")


@contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Iterator[Span]:
    """Run the block in a span named `name` (a child of the current span, if any)."""
    with tracer().start_as_current_span(name, kind=kind, attributes=attributes or None) as s:
        yield s


def inject(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Return `headers` with the current trace context added (W3C traceparent/tracestate)."""
    out = dict(headers or {})
    propagate.inject(out)
    return out


def extract(headers: Mapping[str, str]) -> otel_context.Context:
    """Return the trace context carried by `headers`."""
    return propagate.extract(dict(headers))


@contextmanager
def consume(name: str, headers: Mapping[str, str], **attributes: Any) -> Iterator[Span]:
    """Run a consumer's handling of a message as a child of the span that published it."""
    parent = extract(headers)
    with tracer().start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes or None
    ) as s:
        yield s


def configure(settings: TracingSettings, service: str) -> bool:
    """Install the SDK with an OTLP exporter when `settings.otlp_endpoint` is set.

    Once per process (OpenTelemetry's global provider cannot be replaced); returns whether
    this call installed it.
    """
    if _configured or not settings.otlp_endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"{settings.service_prefix}{service}", **settings.resource}
        ),
        sampler=ParentBasedTraceIdRatio(settings.sample_ratio),
    )
    exporter = OTLPSpanExporter(
        endpoint=settings.otlp_endpoint,
        headers={k: v.get_secret_value() for k, v in settings.otlp_headers.items()},
        timeout=settings.timeout_s,
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured["provider"] = provider
    return True
