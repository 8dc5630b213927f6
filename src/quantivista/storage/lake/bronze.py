"""Bronze: raw provider payloads exactly as received, content-addressed, with a manifest."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from uuid import uuid4

import polars as pl

from quantivista.config import StorageSettings
from quantivista.errors import NotFoundError
from quantivista.model.payloads import RawPayload
from quantivista.model.schema import RAW_MANIFEST_SCHEMA
from quantivista.storage.contracts import check_digest, manifest_row
from quantivista.storage.lake.files import atomic_write_parquet, ensure_dir, is_temporary
from quantivista.storage.lake.layout import LakeLayout

__all__ = ["FileRawStore"]


class FileRawStore:
    """Keep every payload once (`bronze/<provider>/<sha[:2]>/<sha>`) and list it per job."""

    def __init__(self, root: Path, settings: StorageSettings | None = None) -> None:
        self.root = LakeLayout(Path(root)).bronze
        self.settings = settings or StorageSettings()

    def save(self, job_id: str, payloads: Sequence[RawPayload]) -> int:
        """Store payloads of a job; return how many new bodies were written."""
        if not payloads:
            return 0
        rows, written = [], 0
        for p in payloads:
            digest = hashlib.sha256(p.body).hexdigest()
            rel = Path(p.provider) / digest[:2] / digest
            path = self.root / rel
            if not path.exists():  # another writer may store the same body: same bytes
                ensure_dir(path.parent)
                tmp = path.parent / f".tmp-{uuid4().hex}"
                tmp.write_bytes(p.body)
                try:  # a link appears whole, and only once: a concurrent saver counts it
                    os.link(tmp, path)
                    written += 1
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink(missing_ok=True)
            rows.append(manifest_row(job_id, p, digest))
        manifest = pl.DataFrame(rows, schema=RAW_MANIFEST_SCHEMA)
        target = self.root / "_manifest" / f"job_id={job_id}" / f"{uuid4().hex}.parquet"
        atomic_write_parquet(manifest, target, self.settings)
        return written

    def manifest(self, job_id: str | None = None) -> pl.DataFrame:
        """Return the manifest rows (of one job, or all)."""
        pattern = f"job_id={job_id}/*.parquet" if job_id else "job_id=*/*.parquet"
        files = sorted(p for p in (self.root / "_manifest").glob(pattern) if not is_temporary(p))
        if not files:
            return pl.DataFrame(schema=RAW_MANIFEST_SCHEMA)
        return pl.read_parquet(files, hive_partitioning=False)

    def body(self, sha256: str, provider: str) -> bytes:
        """Return a stored payload body."""
        check_digest(sha256, provider)  # also keeps paths inside the store
        try:
            return (self.root / provider / sha256[:2] / sha256).read_bytes()
        except FileNotFoundError:
            raise NotFoundError("unknown payload", provider=provider, sha256=sha256) from None
