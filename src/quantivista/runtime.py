"""The composition root: builds every part of a platform from `Settings`, and nothing else.

    runtime = Runtime.from_settings(settings)
    runtime.ingestion.ingest(["AAPL"], "2024-01-01", "2024-12-31")
    runtime.queries.bars(BarQuery.of("AAPL", "2024-06-01"))

Parts: the backend (every store, from `storage.backend`), the bus, acquisition (providers,
limits, breakers, cache, analytics), the in-process pipeline runner, and the use-case
services that the Python facade (`Platform`), the CLI, the API and workers all call.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

import polars as pl

from quantivista.acquisition.wiring import Acquisition
from quantivista.bus.base import Broker
from quantivista.bus.codecs import Codecs
from quantivista.bus.connect import open_broker
from quantivista.bus.memory import InMemoryBus
from quantivista.bus.registry import SchemaRegistry
from quantivista.clock import Clock, SystemClock
from quantivista.closing import Closing
from quantivista.config import Settings
from quantivista.ops.metrics import SymbolGroups
from quantivista.pipeline.runner import InProcessRunner
from quantivista.pipeline.stages import EpochCache, Sinks, data_epoch
from quantivista.processing.rollup import Rollup
from quantivista.providers.registry import ProviderRegistry, default_registry
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import TradingCalendar, get_calendar
from quantivista.reference.instruments import InstrumentMaster
from quantivista.services.audit import AuditService
from quantivista.services.auth import AuthService
from quantivista.services.backfill import BackfillService
from quantivista.services.distribution import DistributionService
from quantivista.services.exports import ExportService
from quantivista.services.ingestion import IngestionService
from quantivista.services.integration import IntegrationService
from quantivista.services.maintenance import MaintenanceService
from quantivista.services.providers import ProviderService
from quantivista.services.quality import QualityService
from quantivista.services.queries import BarQuery, QueryService
from quantivista.services.reference import ReferenceService
from quantivista.services.revalidation import build_validator
from quantivista.services.simulation import SimulationService
from quantivista.services.streaming import RestBackfill, StreamService
from quantivista.services.workers import WorkerMetrics, WorkerService, split_queue_url
from quantivista.services.workflow_ingestion import WorkflowIngestionService, platform_reference
from quantivista.services.writes import WriteService
from quantivista.storage import open_backend
from quantivista.storage.lake.workflow_lake import WorkflowLake

if TYPE_CHECKING:
    from quantivista.bus.task_queue import TaskQueues

__all__ = ["Runtime"]


class Runtime(Closing):
    """Every part of one platform instance, wired from settings; `close()` releases them."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        registry: ProviderRegistry | None = None,
        create: bool = True,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.backend = open_backend(settings, create=create)
        self.bus = InMemoryBus(dead_letters=self._dead_letter)
        self.acquisition = Acquisition(settings, self.clock, registry or default_registry)
        self._lock = threading.Lock()
        # the store's data epoch, read at most twice a second: what cache keys hang on
        self.epoch = EpochCache(lambda: data_epoch(self.backend.catalog))
        self.queries = QueryService(
            self.backend.bars, self.backend.actions, self.calendar, self.clock, epoch=self.epoch
        )
        self.bus.subscribe("bars.ingested", self.queries.invalidate, name="adjusted-cache")
        self.bus.subscribe("actions.ingested", self.queries.invalidate, name="adjusted-cache")
        self.runner = InProcessRunner(
            sinks=Sinks(
                self.backend.bars,
                self.backend.quarantine,
                self.backend.scores,
                self.backend.catalog,
                _LazyRollup(self) if settings.storage.rollups else None,
            ),
            actions=self.backend.actions,
            raw=self.backend.raw,
            bus=self.bus,
            clock=self.clock,
            validator=lambda: self.validator,
            timezone=lambda: self.calendar().tz,
            groups=SymbolGroups(settings.ops.symbol_groups),
        )
        backend = self.backend
        self.writes = WriteService(
            self.runner, backend.actions, backend.quarantine, self.bus, self.clock, backend.catalog,
            keep_recent=settings.ingest.keep_recent_history,
        )  # fmt: skip
        self.providers = ProviderService(self.acquisition, self.backend.catalog)
        self.ingestion = IngestionService(
            self.runner, self.acquisition, backend.catalog, self.clock, settings.ingest,
            after_run=self.providers.save_stats, workers=settings.workers,
            publish=self._publish if settings.workers.queue_url else None,
        )  # fmt: skip
        self.exports = ExportService(settings, backend.catalog, self.queries, self.ingestion)
        self.backfill = BackfillService(
            backend.bars, self.calendar, self.acquisition.registry, settings, self.ingestion,
            self.clock.now,
        )  # fmt: skip
        self.quality = QualityService(
            self.backend.quarantine, self.backend.scores, self.backend.catalog
        )
        self.reference = ReferenceService(
            InstrumentMaster(self.backend.instruments), self.calendar, self.queries, self.writes
        )
        self.maintenance = MaintenanceService(settings, self.backend, self.clock)
        self.simulation = SimulationService(self.acquisition)
        self.audit = AuditService.attach(settings, self.backend, self.clock, self.bus)
        self.auth = AuthService(
            self.backend.clients, self.backend.catalog, settings.api, self.clock
        )
        self.workflows = WorkflowIngestionService(
            self.backend.workflows,
            WorkflowLake(settings.data_dir),
            self.bus,
            self.clock,
            reference=lambda: platform_reference(self.backend.instruments, self.backend.bars),
            bars=lambda symbols, start, end, tf: self.queries.bars(
                BarQuery.of(symbols, start, end, timeframe=tf)
            ),
            limiter=self.acquisition.limiter,
            breakers=self.acquisition.breakers,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        registry: ProviderRegistry | None = None,
        create: bool = True,
    ) -> Runtime:
        """Build a runtime from explicit settings (`create=False`: the store must exist)."""
        return cls(settings, clock=clock, registry=registry, create=create)

    def worker(
        self,
        queue: str | None = None,
        concurrency: int | None = None,
        *,
        probe_port: int | None = None,
    ) -> WorkerService:
        """Return a worker serving `queue` (default: `workers.queue`) of this job catalog.

        `queue` may be a NATS URL (`nats://host:4222/NAME`): tasks come from that stream.
        """
        metrics = WorkerMetrics()
        self.ingestion.events = metrics.event
        url, name = split_queue_url(queue) if queue else (None, None)
        name = name or self.settings.workers.queue
        if url is not None and url != self.settings.workers.queue_url:
            from quantivista.bus.task_queue import TaskQueues

            self.__dict__["task_queues"] = TaskQueues(url, lease_s=self.settings.ingest.lease_s)
        tasks = self.task_queues.get(name) if url or self.settings.workers.queue_url else None
        return WorkerService(
            self.ingestion,
            self.settings.workers,
            self.settings.probes,
            metrics=metrics,
            tasks=tasks,
            queue=name,
            concurrency=concurrency,
            probe_port=probe_port,
            warm_up=self._warm_up,
        )

    @cached_property
    def task_queues(self) -> TaskQueues:
        """Return the NATS task queues of `workers.queue_url` (opened on first use)."""
        from quantivista.bus.task_queue import TaskQueues

        assert self.settings.workers.queue_url is not None
        return TaskQueues(self.settings.workers.queue_url, lease_s=self.settings.ingest.lease_s)

    def _publish(self, queue: str, task_ids: list[str]) -> None:
        self.task_queues.publish(queue, task_ids)

    def _warm_up(self) -> None:
        # what a first task would load lazily, paid before the worker says it serves
        self.calendar()
        _ = self.validator
        self.acquisition.router([self.settings.ingest.default_provider])

    def calendar(self, mic: str | None = None) -> TradingCalendar:
        """Return an exchange's trading calendar (default: the ingest calendar)."""
        return get_calendar(mic or self.settings.ingest.calendar)

    @cached_property
    def validator(self) -> Validator:
        """Return the validator: default rules plus the business rules file, if any."""
        return build_validator(self.settings)

    @cached_property
    def rollup(self) -> Rollup | None:
        """Return the rollup keeping derived timeframes, when `storage.rollups` names any."""
        targets = self.settings.storage.rollups
        if not targets:
            return None
        session = self.settings.intraday.rollup_session
        return Rollup(self.backend.bars, self.calendar(), targets, session=session)

    @cached_property
    def broker(self) -> Broker:
        """Return the message broker of `bus.url` (connected on first use)."""
        return open_broker(self.settings.bus.url, self.settings.bus)

    @cached_property
    def codecs(self) -> Codecs:
        """Return the codecs, with the schema registry kept in the catalog."""
        return Codecs(SchemaRegistry(self.backend.catalog))

    def stream_service(self, provider: str) -> StreamService:
        """Return the real-time pipeline for a live feed of `provider`."""
        vendor = [provider] if provider in self.acquisition.registry else None
        fill = RestBackfill(self.ingestion, self.backend.bars, vendor)
        return StreamService(self.runner, self.bus, self.broker, self.codecs,
                             self.settings.stream, self._live_validator(), self.clock,
                             codec=self.settings.bus.codec, provider=provider,
                             calendar=self.calendar(), backfill=fill)  # fmt: skip

    def _live_validator(self) -> Validator:
        """Live and broker-fed bars include extended hours: no session calendar judges them."""
        return Validator(None, self.validator.rules, self.validator.settings)

    @cached_property
    def distribution(self) -> DistributionService:
        """Return replays and dead letters over the broker."""
        return DistributionService(self.broker, self.codecs)

    def integration_service(self) -> IntegrationService:
        """Return the integration consumer (raw bars -> store -> enriched bars)."""
        return IntegrationService(self.runner, self.broker, self.codecs, self.backend.actions,
                                  InstrumentMaster(self.backend.instruments), self.backend.bars,
                                  self.settings.integrate, self._live_validator(), self.clock,
                                  codec=self.settings.bus.codec)  # fmt: skip

    def _dead_letter(
        self, topic: str, payload: dict[str, Any], error: str, handler: str | None
    ) -> None:
        self.backend.catalog.add_dead_letter(topic, payload, error, handler, self.clock.now())

    def close(self) -> None:
        """Release providers, connections and file handles."""
        if "broker" in self.__dict__:
            self.broker.close()
        if "task_queues" in self.__dict__:
            self.task_queues.close()
        self.acquisition.close()
        self.audit.close()
        self.backend.close()


class _LazyRollup:
    """Builds the rollup on the first write that needs it (the calendar loads slowly)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def refresh(self, changed: pl.DataFrame) -> object:
        rollup = self._runtime.rollup
        return rollup.refresh(changed) if rollup is not None else None
