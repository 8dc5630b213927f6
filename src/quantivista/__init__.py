"""QuantiVista: market-data acquisition, quality, storage and distribution in one package.

import quantivista as qv
p = qv.Platform.open("./data")
job = p.ingest(["ARDENR"], start="2020-01-01", end="2024-12-31")
bars = p.bars("ARDENR", start="2024-01-01")
"""

from quantivista._version import __version__
from quantivista.clock import Clock, SystemClock, TestClock
from quantivista.config import Settings
from quantivista.errors import (
    BusError,
    CalendarError,
    CircuitOpenError,
    ConfigurationError,
    EntitlementError,
    InvalidInputError,
    InvalidTimeframeError,
    MalformedResponseError,
    NotFoundError,
    ProviderError,
    QuantiVistaError,
    QuotaExhaustedError,
    RateLimitedError,
    SchemaError,
    StorageError,
    SymbolNotFoundError,
    TransientProviderError,
)
from quantivista.model import (
    ACTION_POLARS_SCHEMA,
    ACTION_SCHEMA,
    BAR_POLARS_SCHEMA,
    BAR_SCHEMA,
    AssetClass,
    CorporateAction,
    DataQualityReport,
    IngestionJob,
    Instrument,
    JobStatus,
    QualityFlag,
    Quote,
    Severity,
    Timeframe,
    Trade,
    ValidationIssue,
)
from quantivista.platform import Platform

# -- issue 4: processing and quality
from quantivista.processing.gaps import fill_gaps
from quantivista.processing.reconcile import Consensus, reconcile
from quantivista.quality.business import load_rules
from quantivista.quality.rules import Rule
from quantivista.quality.validate import Validator
from quantivista.reference.instruments import InstrumentMaster

__all__ = [
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
