"""Bulk exports: a job of kind `export` that writes a file of bars (Parquet, Arrow IPC, CSV).

The API submits it; `qv worker`s run it when workers are enabled (queued in the job
catalog, under leases, retried like any task), else the submitting process does. The file
goes to `api.exports_url` (any fsspec URL every API host reaches) or `api.exports_dir`.
An export's state is its job's: running until the job ends, then succeeded or failed.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal
from uuid import uuid4

from fsspec.core import url_to_fs  # type: ignore[import-untyped]
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]
from pydantic import BaseModel, Field

from quantivista.config import Settings
from quantivista.errors import InvalidInputError, NotFoundError
from quantivista.model.jobs import IngestionJob, JobStatus, JobTask, TaskStatus
from quantivista.services.encode import BodyFormat, encode
from quantivista.services.ingestion import IngestionService
from quantivista.services.queries import BarQuery, QueryService
from quantivista.storage.contracts import JobCatalog

__all__ = ["Export", "ExportRequest", "ExportService"]

KIND = "export"
_SUFFIX = {BodyFormat.parquet: "parquet", BodyFormat.arrow: "arrows", BodyFormat.csv: "csv"}


class ExportRequest(BaseModel):
    """What to export: symbols (or the whole universe), range, timeframe, adjustment."""

    symbols: list[str] | None = Field(default=None, description="None: every stored symbol")
    start: date | None = None
    end: date | None = None
    timeframe: str = Field(default="1d", pattern=r"^\d+(m|h|d|w|mo)$")
    adjust: Literal["none", "splits", "all"] = "none"
    format: Literal["parquet", "arrow", "csv"] = "parquet"


class Export(BaseModel):
    """An export job and, once done, its file."""

    export_id: str
    tenant: str
    status: Literal["running", "succeeded", "failed"]
    request: ExportRequest
    rows: int | None = None
    bytes: int | None = None
    error: str | None = None
    job_id: str | None = Field(default=None, description="the job that writes the file")


def _key(export_id: str) -> str:
    return f"export:{export_id}"


class ExportService:
    """Submit exports, run their tasks (the `export` job kind), find their files."""

    def __init__(
        self,
        settings: Settings,
        catalog: JobCatalog,
        queries: QueryService,
        ingestion: IngestionService,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.queries = queries
        self.ingestion = ingestion
        ingestion.handlers[KIND] = self.run_task

    def submit(self, tenant: str, request: ExportRequest, symbols: list[str]) -> Export:
        """Record an export of `symbols` and its job. With `workers.enabled` the job is
        queued for `qv worker`s; else the caller runs it (`ingestion.run(export.job_id)`)."""
        if not symbols:
            raise InvalidInputError("nothing to export: the store holds no bars")
        export = Export(export_id=uuid4().hex, tenant=tenant, status="running", request=request)
        job = self.ingestion.submit_kind(
            KIND,
            symbols,
            {"export_id": export.export_id},
            tenant=tenant,
            queued=self.settings.workers.enabled,
        )
        export = export.model_copy(update={"job_id": job.job_id})
        self._save(export)
        return export

    def get(self, export_id: str, tenant: str) -> Export:
        """Return an export of `tenant` with its job's state; `NotFoundError` for others'."""
        raw: dict[str, Any] | None = self.catalog.get_state(_key(export_id))
        export = Export.model_validate(raw) if raw else None
        if export is None or export.tenant != tenant:
            raise NotFoundError("unknown export", export_id=export_id)
        if export.job_id is None or export.status != "running":
            return export
        job = self.ingestion.job(export.job_id)
        if job.status in (JobStatus.SUCCEEDED, JobStatus.PARTIAL):
            # the file and its counts were recorded by the task before the job ended
            done: dict[str, Any] | None = self.catalog.get_state(_key(export_id))
            return Export.model_validate(done) if done else export
        if job.status is JobStatus.FAILED:
            errors = [d.get("message", "") for d in job.error_details]
            return export.model_copy(
                update={"status": "failed", "error": errors[-1] if errors else "failed"}
            )
        return export

    def location(self, export: Export) -> tuple[Any, str]:
        """The file system and path of an export's file (local, or any fsspec URL)."""
        api = self.settings.api
        base = api.exports_url or str(api.exports_dir or self.settings.data_dir / "exports")
        name = f"{export.export_id}.{_SUFFIX[BodyFormat(export.request.format)]}"
        fs, root = url_to_fs(base, **api.exports_options)
        return fs, f"{root.rstrip('/')}/{name}"

    def run_task(self, job: IngestionJob, task: JobTask) -> JobTask:
        """Write the file of the export `job` was made for; return the task, succeeded."""
        raw: dict[str, Any] | None = self.catalog.get_state(_key(str(job.params["export_id"])))
        if raw is None:
            raise NotFoundError("the export's record is gone", job_id=job.job_id)
        export = Export.model_validate(raw)
        request = export.request
        query = BarQuery.of(task.symbols, request.start, request.end, request.timeframe,
                            adjust=request.adjust)  # fmt: skip
        frame = self.queries.bars(query)
        body = encode(frame, BodyFormat(request.format))
        fs, path = self.location(export)
        if isinstance(fs, LocalFileSystem):  # a reader never sees half a file
            fs.makedirs(fs._parent(path), exist_ok=True)
            fs.pipe_file(path + ".part", body)
            fs.mv(path + ".part", path)
        else:  # an object store's put is atomic
            fs.pipe_file(path, body)
        self._save(
            export.model_copy(
                update={"status": "succeeded", "rows": frame.height, "bytes": len(body)}
            )
        )
        return task.model_copy(
            update={"status": TaskStatus.SUCCEEDED, "records_processed": frame.height}
        )

    def _save(self, export: Export) -> None:
        self.catalog.put_state(_key(export.export_id), export.model_dump(mode="json"))
