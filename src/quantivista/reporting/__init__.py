"""The reporting-side Data Ingestion Service's engines: transformation rules, quality checks,
connectors and the simulated workflows. Pure functions over Polars frames; storage and the
job engine are wired in `services.workflow_ingestion`."""
