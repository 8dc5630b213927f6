"""The public API: `quantivista.__all__` is pinned, sorted, and every name resolves."""

from __future__ import annotations

import subprocess
import sys

import quantivista as qv

# Changing this list is changing the public API: do it on purpose, with a changelog note.
EXPECTED_ALL = [
    "ACTION_POLARS_SCHEMA",
    "ACTION_SCHEMA",
    "AssetClass",
    "BAR_POLARS_SCHEMA",
    "BAR_SCHEMA",
    "BusError",
    "CalendarError",
    "CircuitOpenError",
    "Clock",
    "ConfigurationError",
    "Consensus",
    "CorporateAction",
    "DataQualityReport",
    "EntitlementError",
    "IngestionJob",
    "Instrument",
    "InstrumentMaster",
    "InvalidInputError",
    "InvalidTimeframeError",
    "JobStatus",
    "MalformedResponseError",
    "NotFoundError",
    "Platform",
    "ProviderError",
    "QualityFlag",
    "QuantiVistaError",
    "QuotaExhaustedError",
    "Quote",
    "RateLimitedError",
    "Rule",
    "SchemaError",
    "Settings",
    "Severity",
    "StorageError",
    "SymbolNotFoundError",
    "SystemClock",
    "TestClock",
    "Timeframe",
    "Trade",
    "TransientProviderError",
    "ValidationIssue",
    "Validator",
    "__version__",
    "fill_gaps",
    "load_rules",
    "reconcile",
]


def test_expected_list_is_itself_sorted_case_sensitively() -> None:
    assert sorted(EXPECTED_ALL) == EXPECTED_ALL


def test_public_names_are_pinned() -> None:
    assert set(qv.__all__) == set(EXPECTED_ALL)
    assert len(qv.__all__) == len(set(qv.__all__)), "duplicate names in __all__"


def test_all_is_sorted_case_sensitively() -> None:
    assert qv.__all__ == sorted(qv.__all__)


def test_every_public_name_resolves() -> None:
    for name in qv.__all__:
        assert getattr(qv, name) is not None, name


def test_public_names_are_the_canonical_objects() -> None:
    from quantivista.config import Settings
    from quantivista.errors import QuantiVistaError
    from quantivista.model.schema import BAR_POLARS_SCHEMA
    from quantivista.model.timeframe import Timeframe
    from quantivista.platform import Platform

    assert qv.Platform is Platform
    assert qv.Settings is Settings
    assert qv.QuantiVistaError is QuantiVistaError
    assert qv.Timeframe is Timeframe
    assert qv.BAR_POLARS_SCHEMA is BAR_POLARS_SCHEMA


def test_version_is_a_dotted_string() -> None:
    parts = qv.__version__.split(".")
    assert len(parts) >= 3
    assert all(p.isdigit() for p in parts[:2])


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from quantivista import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(EXPECTED_ALL)


def test_import_does_not_pull_in_heavy_backends() -> None:
    heavy = ["fastapi", "nats", "psycopg", "redis", "aiokafka", "confluent_kafka", "pulsar"]
    code = f"import sys, quantivista\nprint(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
