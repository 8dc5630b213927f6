"""Operations: probes, metrics, alerts, tracing and scheduling of the long-running services."""
