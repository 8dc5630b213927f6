"""The cold tier: bars past their hot retention, kept as compressed Parquet on any fsspec
filesystem (a local path, `file://`, `s3://`, `memory://`, ...), read back transparently.

The cold layout mirrors the hot one (`silver/bars/timeframe=X/symbol=S/[month=M/]
data.parquet`). Archiving a partition writes the cold file first (temporary name, then
move) and only then rewrites the hot one, so a crash in between leaves rows in both tiers;
reads prefer the hot copy and a rerun of the archival finishes the move.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import fsspec  # type: ignore[import-untyped]
import polars as pl

from quantivista.errors import StorageError
from quantivista.model.timeframe import Timeframe

if TYPE_CHECKING:
    from quantivista.storage.lake import ParquetLake

__all__ = ["ColdTier", "archive_expired"]


class ColdTier:
    """Parquet files under one fsspec URL."""

    def __init__(self, url: str, *, compression_level: int = 9) -> None:
        self.url = url
        fs, base = fsspec.core.url_to_fs(url)
        self.fs: Any = fs
        self.base = str(base).rstrip("/")
        self.compression_level = compression_level

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def files(self, rel_dir: str) -> list[str]:
        """Return the relative paths of the data files under `rel_dir`, sorted."""
        found = self.fs.glob(self._path(rel_dir) + "/**/data.parquet")
        direct = self._path(rel_dir) + "/data.parquet"
        if self.fs.exists(direct):
            found = [*found, direct]
        names = {str(p) for p in found}
        return sorted(n[len(self.base) + 1 :] if n.startswith(self.base) else n for n in names)

    def read(self, rel: str) -> pl.DataFrame | None:
        """Return one cold file, or None when it does not exist."""
        path = self._path(rel)
        if not self.fs.exists(path):
            return None
        try:
            with self.fs.open(path, "rb") as handle:
                return pl.read_parquet(handle)
        except (OSError, pl.exceptions.ComputeError) as exc:
            raise StorageError("cannot read cold file", path=path) from exc

    def write(self, rel: str, frame: pl.DataFrame) -> None:
        """Write one cold file under a temporary name, then move it into place."""
        path = self._path(rel)
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid4().hex}.parquet"
        with self.fs.open(tmp, "wb") as handle:
            frame.write_parquet(
                handle, compression="zstd", compression_level=self.compression_level
            )
        self.fs.mv(tmp, path)


def archive_expired(
    lake: ParquetLake, hot_days: Mapping[str, int], now: datetime
) -> dict[str, int]:
    """Move bars older than each timeframe's hot retention to the lake's cold tier.

    Return the rows moved per timeframe. Reads keep seeing the moved bars.
    """
    if lake.cold is None:
        raise StorageError("no cold tier configured (storage.archive_url)")
    moved: dict[str, int] = {}
    for name, days in hot_days.items():
        tf = str(Timeframe.parse(name))
        before = now - timedelta(days=days)
        count = 0
        for path in lake.data_files(tf, before=before):
            with lake._locked(path.parent):
                if not path.exists():
                    continue
                hot = lake._read_file(path)
                old = hot.filter(pl.col("ts") < before)
                if old.is_empty():
                    continue
                rel = path.relative_to(lake.root).as_posix()
                existing = lake.cold.read(rel)
                merged = old if existing is None else pl.concat([existing, old])
                merged = merged.unique(subset=["symbol", "ts"], keep="last").sort("symbol", "ts")
                lake.cold.write(rel, merged)
                keep = hot.filter(pl.col("ts") >= before)
                if keep.is_empty():
                    path.unlink()
                else:
                    from quantivista.storage.lake import atomic_write_parquet

                    atomic_write_parquet(keep, path, lake.settings)
                count += old.height
        moved[tf] = count
    return moved
