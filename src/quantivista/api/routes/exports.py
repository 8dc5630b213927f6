"""Bulk exports: a job that writes a file of bars (Parquet, Arrow IPC or CSV) to download."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date
from typing import Annotated, Any, Literal
from uuid import uuid4

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from fsspec.core import url_to_fs  # type: ignore[import-untyped]
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]
from pydantic import BaseModel, Field

from quantivista.api.deps import Caller, State, require
from quantivista.api.encode import MEDIA_TYPES, BodyFormat, encode
from quantivista.api.errors import COMMON_RESPONSES
from quantivista.api.state import ApiState
from quantivista.errors import InvalidInputError, NotFoundError
from quantivista.model.auth import Scope
from quantivista.services.queries import BarQuery

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/exports", tags=["exports"], responses=COMMON_RESPONSES)

ReadBars = Annotated[Caller, Depends(require(Scope.READ_BARS))]
_BLOCK = 1 << 20  # bytes per read of a download
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


def _key(export_id: str) -> str:
    return f"export:{export_id}"


def _location(state: ApiState, export: Export) -> tuple[Any, str]:
    """The file system and path of an export's file (local, or any fsspec URL)."""
    api = state.runtime.settings.api
    base = api.exports_url or str(api.exports_dir or state.runtime.settings.data_dir / "exports")
    name = f"{export.export_id}.{_SUFFIX[BodyFormat(export.request.format)]}"
    fs, root = url_to_fs(base, **api.exports_options)
    return fs, f"{root.rstrip('/')}/{name}"


def _save(state: ApiState, export: Export) -> None:
    state.runtime.backend.catalog.put_state(_key(export.export_id), export.model_dump(mode="json"))


def _load(state: ApiState, who: Caller, export_id: str) -> Export:
    raw: dict[str, Any] | None = state.runtime.backend.catalog.get_state(_key(export_id))
    export = Export.model_validate(raw) if raw else None
    if export is None or export.tenant != who.principal.tenant:
        raise NotFoundError("unknown export", export_id=export_id)
    return export


def _run(state: ApiState, export: Export, symbols: list[str]) -> None:
    """Write the export's file (in a thread); record the outcome."""
    request = export.request
    try:
        query = BarQuery.of(symbols, request.start, request.end, request.timeframe,
                            adjust=request.adjust)  # fmt: skip
        frame = state.runtime.queries.bars(query)
        fs, path = _location(state, export)
        body = encode(frame, BodyFormat(request.format))
        if isinstance(fs, LocalFileSystem):  # a reader never sees half a file
            fs.makedirs(fs._parent(path), exist_ok=True)
            fs.pipe_file(path + ".part", body)
            fs.mv(path + ".part", path)
        else:  # an object store's put is atomic
            fs.pipe_file(path, body)
        done = export.model_copy(
            update={"status": "succeeded", "rows": frame.height, "bytes": len(body)}
        )
    except Exception as exc:  # recorded on the export: the caller polls for it
        done = export.model_copy(update={"status": "failed", "error": str(exc)})
    _save(state, done)


@router.post("", status_code=202, response_model=Export)
def create(state: State, who: ReadBars, request: ExportRequest) -> Export:
    """Start an export; poll `GET /exports/{id}`, then download the file."""
    symbols = request.symbols or state.runtime.backend.bars.symbols()
    if not symbols:
        raise InvalidInputError("nothing to export: the store holds no bars")
    state.auth.entitled(who.tenant, dataset="bars", symbols=symbols, timeframe=request.timeframe)
    export = Export(export_id=uuid4().hex, tenant=who.principal.tenant, status="running",
                    request=request)  # fmt: skip
    _save(state, export)
    threading.Thread(
        target=_run, args=(state, export, symbols), name="qv-export", daemon=True
    ).start()
    return export


@router.get("/{export_id}", response_model=Export)
def status(state: State, who: ReadBars, export_id: str) -> Export:
    """Return an export's state."""
    return _load(state, who, export_id)


@router.get(
    "/{export_id}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {MEDIA_TYPES[f]: {} for f in _SUFFIX}, "description": "file"}},
)
def download(state: State, who: ReadBars, export_id: str) -> StreamingResponse:
    """Stream the export's file (from local disk or the object store of `exports_url`)."""
    export = _load(state, who, export_id)
    if export.status != "succeeded":
        raise NotFoundError(f"the export is {export.status}", export_id=export_id)
    fmt = BodyFormat(export.request.format)
    fs, path = _location(state, export)
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
    return StreamingResponse(chunks(), media_type=MEDIA_TYPES[fmt], headers=headers)
