"""The typed batches that pipeline stages hand each other.

    acquire  -> RawBatch        what a provider answered for some symbols (bronze payloads,
                                 parsed bars in the vendor's price basis, actions, failures)
    normalize -> Batch          canonical bars, raw prices, UTC, lineage columns set
    validate -> ValidatedBatch  clean rows, rejected rows with reasons, scores, report
    store    -> StoredBatch     what the stores changed

Every batch carries a `BatchId` (job, task, batch number): the idempotency key a
broker-backed runner uses to apply a redelivered batch once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from quantivista.errors import QuantiVistaError
from quantivista.model.jobs import DataQualityReport
from quantivista.model.payloads import RawPayload
from quantivista.model.schema import ACTION_POLARS_SCHEMA
from quantivista.storage.base import UpsertStats

__all__ = ["Batch", "BatchId", "FetchFailure", "RawBatch", "StoredBatch", "ValidatedBatch"]


@dataclass(frozen=True, slots=True)
class BatchId:
    """Which job, task and batch a batch belongs to."""

    job_id: str
    task_id: str | None = None
    batch_no: int = 0

    def __str__(self) -> str:
        return f"{self.task_id or self.job_id}#{self.batch_no}"


@dataclass(frozen=True, slots=True)
class FetchFailure:
    """A symbol no provider could serve, with the last error."""

    symbol: str
    error: QuantiVistaError


@dataclass(slots=True)
class RawBatch:
    """What acquisition got for a batch of symbols, before normalization.

    `bars` are in the vendors' price basis (`basis` per symbol: the response's own, or the
    provider's `ProviderCapabilities.basis_for(timeframe)`); `received_at` is when the
    answers arrived, which fixes the corporate actions an adjusted history reflects.
    """

    id: BatchId
    timeframe: str
    bars: pl.DataFrame
    actions: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=ACTION_POLARS_SCHEMA))
    payloads: list[RawPayload] = field(default_factory=list)
    # per symbol: the price basis of its bars and the vendor's dividend convention
    basis: dict[str, str] = field(default_factory=dict)
    conventions: dict[str, str] = field(default_factory=dict)
    received_at: datetime | None = None
    failures: list[FetchFailure] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # symbols a provider had no bars for
    source: str = ""


@dataclass(slots=True)
class Batch:
    """Canonical bars with raw prices (the input of validation)."""

    id: BatchId
    bars: pl.DataFrame
    source: str
    at: datetime  # knowledge time: when the batch's rows became known
    converted: int = 0  # rows turned from an adjusted basis back into raw prices
    # rows normalization could not make raw (with rule, severity, reason): to quarantine
    held: pl.DataFrame | None = None


@dataclass(slots=True)
class ValidatedBatch:
    """Validation's verdict on a batch."""

    id: BatchId
    source: str
    clean: pl.DataFrame
    rejected: pl.DataFrame
    scores: pl.DataFrame
    report: DataQualityReport
    symbols: list[str]  # distinct symbols of the batch, sorted
    # stored bars whose pending spike this batch decided: new versions, stored with `clean`
    decided: pl.DataFrame | None = None


@dataclass(slots=True)
class StoredBatch:
    """What storing a validated batch changed."""

    id: BatchId
    source: str
    clean: pl.DataFrame
    stats: UpsertStats
    quarantined: int
    rules: dict[str, int]  # quarantined rows per rule
    report: DataQualityReport
    symbols: list[str] | None  # the stored rows' symbols when known without a scan
    # earlier stored bars this batch gave new versions (a pending spike decided), as stored
    decided: pl.DataFrame | None = None
