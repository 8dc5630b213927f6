"""Bulk exports: a job that writes a file of bars (Parquet, Arrow IPC or CSV) to download.

The job is of kind `export` (services/exports.py): with `workers.enabled` a `qv worker`
runs it, else this API process does, on a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from quantivista.api.deps import Caller, State, require
from quantivista.api.errors import COMMON_RESPONSES
from quantivista.errors import NotFoundError
from quantivista.model.auth import Scope
from quantivista.services.encode import MEDIA_TYPES, BodyFormat
from quantivista.services.exports import Export, ExportRequest

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/exports", tags=["exports"], responses=COMMON_RESPONSES)

ReadBars = Annotated[Caller, Depends(require(Scope.READ_BARS))]
_BLOCK = 1 << 20  # bytes per read of a download
_FORMATS = (BodyFormat.parquet, BodyFormat.arrow, BodyFormat.csv)


@router.post("", status_code=202, response_model=Export)
def create(state: State, who: ReadBars, request: ExportRequest) -> Export:
    """Start an export; poll `GET /exports/{id}`, then download the file."""
    runtime = state.runtime
    symbols = request.symbols or runtime.backend.bars.symbols()
    state.auth.entitled(who.tenant, dataset="bars", symbols=symbols, timeframe=request.timeframe)
    export = runtime.exports.submit(who.principal.tenant, request, symbols)
    if not runtime.settings.workers.enabled:  # the embedded default: this process runs it
        threading.Thread(
            target=runtime.ingestion.run, args=(export.job_id,), name="qv-export", daemon=True
        ).start()
    return export


@router.get("/{export_id}", response_model=Export)
def status(state: State, who: ReadBars, export_id: str) -> Export:
    """Return an export's state."""
    return state.runtime.exports.get(export_id, who.principal.tenant)


@router.get(
    "/{export_id}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {MEDIA_TYPES[f]: {} for f in _FORMATS}, "description": "file"}},
)
def download(state: State, who: ReadBars, export_id: str) -> StreamingResponse:
    """Stream the export's file (from local disk or the object store of `exports_url`)."""
    exports = state.runtime.exports
    export = exports.get(export_id, who.principal.tenant)
    if export.status != "succeeded":
        raise NotFoundError(f"the export is {export.status}", export_id=export_id)
    fs, path = exports.location(export)
    try:
        handle = fs.open(path, "rb")
    except FileNotFoundError:
        raise NotFoundError("the export's file is gone", export_id=export_id) from None

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(_BLOCK):
                yield block

    name = path.rsplit("/", 1)[-1]
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if export.bytes is not None:
        headers["Content-Length"] = str(export.bytes)
    return StreamingResponse(
        chunks(), media_type=MEDIA_TYPES[BodyFormat(export.request.format)], headers=headers
    )
