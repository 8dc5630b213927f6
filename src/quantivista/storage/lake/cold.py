"""The cold tier: bars past their hot retention, kept as compressed Parquet on any fsspec
filesystem (a local path, `file://`, `s3://`, `memory://`, ...), read back transparently.

The cold layout mirrors the hot one: one file per timeframe and bucket (and month, intraday),
sorted by symbol and ts:

    silver/bars/timeframe=1d/bucket=007/data.parquet
    silver/bars/timeframe=1m/bucket=007/month=2024-01/data.parquet

Archiving a partition writes the cold file first (temporary name, then move), records it in
the cold index, and only then rewrites the hot file, so a crash in between leaves rows in
both tiers; reads prefer the hot copy and a rerun of the archival finishes the move.

The cold index (`<root>/cold_index/timeframe=X/bucket=B.json`, in the hot data directory)
lists each cold file with its identity (size and mtime or ETag, from `fs.info`), its bytes,
and the rows and first/last ts of each of its symbols. Reads, `symbols()`, `stats()` and
`qv sql` consult it instead of listing the archive: a lake with nothing archived never
touches the archive, and decoded cold files are cached under their recorded identity. The
index is written only by archival; when it is missing or describes another archive URL it
is rebuilt once from a listing of the archive (`ColdIndex.rebuild` does it on demand, after
the archive was changed by other means).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import fsspec  # type: ignore[import-untyped]
import polars as pl
import pyarrow.parquet as pq

from quantivista.errors import StorageError
from quantivista.storage.lake.files import file_identity, flocked, handle_identity

__all__ = ["ColdEntry", "ColdIndex", "ColdTier"]

DATA_FILE = "data.parquet"
INDEX_DIR = "cold_index"
_TIER_FILE = "_tier.json"
# the first of these an fsspec `info` has names the file's version (ETag on object stores)
_STAMPS = ("ETag", "etag", "mtime", "LastModified", "last_modified", "updated", "created")

Identity = tuple[Any, ...]


def identity(info: Mapping[str, Any]) -> Identity:
    """Return a file's identity from its fsspec `info`: size, version stamp, inode if any."""
    stamp: Any = None
    for key in _STAMPS:
        if info.get(key) is not None:
            stamp = info[key]
            break
    if isinstance(stamp, datetime):  # some listings give datetimes where `info` gives floats
        stamp = stamp.timestamp()
    return (int(info["size"]), stamp, info.get("ino"))


class ColdTier:
    """Parquet files under one fsspec URL."""

    def __init__(self, url: str, *, compression_level: int = 9) -> None:
        self.url = url
        fs, base = fsspec.core.url_to_fs(url)
        self.fs: Any = fs
        self.base = str(base).rstrip("/")
        self.compression_level = compression_level

    @property
    def is_local(self) -> bool:
        """Return whether the archive is a local directory (engines can read plain paths)."""
        protocol = self.fs.protocol
        return bool({"file", "local"} & set([protocol] if isinstance(protocol, str) else protocol))

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def location(self, rel: str) -> str:
        """Return where another engine finds `rel`: a plain path, or a URL of the filesystem."""
        path = self._path(rel)
        return path if self.is_local else str(self.fs.unstrip_protocol(path))

    def listing(self, rel_dir: str = "silver/bars") -> dict[str, dict[str, Any]]:
        """Return the data files under `rel_dir` as relative path -> fsspec info, sorted."""
        try:
            found = self.fs.find(self._path(rel_dir), detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for name, info in found.items():
            rel = str(name)[len(self.base) + 1 :] if str(name).startswith(self.base) else name
            if rel.endswith("/" + DATA_FILE):
                out[rel] = info
        return dict(sorted(out.items()))

    def read(self, rel: str, columns: list[str] | None = None) -> pl.DataFrame | None:
        """Return one cold file, or None when it does not exist."""
        path = self._path(rel)
        try:
            with self.fs.open(path, "rb") as handle:
                return pl.read_parquet(handle, columns=columns)
        except FileNotFoundError:
            return None
        except (OSError, pl.exceptions.ComputeError) as exc:
            raise StorageError("cannot read cold file", path=path) from exc

    def metadata(self, rel: str) -> pq.FileMetaData:
        """Return the Parquet footer of one cold file (reads the footer only)."""
        path = self._path(rel)
        try:
            with self.fs.open(path, "rb") as handle:
                return pq.read_metadata(handle)
        except OSError as exc:
            raise StorageError("cannot read cold file footer", path=path) from exc

    def write(self, rel: str, frame: pl.DataFrame) -> dict[str, Any]:
        """Write one cold file under a temporary name, move it into place; return its info."""
        path = self._path(rel)
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid4().hex}.parquet"
        with self.fs.open(tmp, "wb") as handle:
            frame.write_parquet(
                handle, compression="zstd", compression_level=self.compression_level
            )
        self.fs.mv(tmp, path)
        return dict(self.fs.info(path))


@dataclass(frozen=True, slots=True)
class ColdEntry:
    """One cold file as the index records it.

    `symbols` maps each symbol in the file to (rows, first ts, last ts), ts in epoch
    microseconds.
    """

    rel: str
    identity: Identity
    bytes: int
    symbols: Mapping[str, tuple[int, int, int]]

    @property
    def timeframe(self) -> str:
        """Return the timeframe of the file (from its path)."""
        return self.rel.split("/")[2][len("timeframe=") :]

    def to_json(self) -> dict[str, Any]:
        """Return the entry as stored in the index."""
        return {"id": list(self.identity), "bytes": self.bytes, "symbols": self.symbols}

    @classmethod
    def from_json(cls, rel: str, raw: Mapping[str, Any]) -> ColdEntry:
        """Return the entry stored in the index under `rel`."""
        symbols = {s: (int(v[0]), int(v[1]), int(v[2])) for s, v in raw["symbols"].items()}
        return cls(rel, tuple(raw["id"]), int(raw["bytes"]), symbols)

    @classmethod
    def of(cls, rel: str, info: Mapping[str, Any], frame: pl.DataFrame) -> ColdEntry:
        """Return the entry of the file `rel` with fsspec `info` holding `frame`."""
        ts = pl.col("ts").dt.epoch("us")
        per = frame.group_by("symbol").agg(n=pl.len(), lo=ts.min(), hi=ts.max())
        symbols = {
            s: (int(n), int(lo), int(hi))
            for s, n, lo, hi in zip(
                per["symbol"].to_list(),
                per["n"].to_list(),
                per["lo"].to_list(),
                per["hi"].to_list(),
                strict=True,
            )
        }
        return cls(rel, identity(info), int(info["size"]), symbols)


class ColdIndex:
    """The lake's record of its cold files (see the module docstring)."""

    def __init__(self, root: Path, tier: ColdTier, lock_dir: Path) -> None:
        self.root = Path(root) / INDEX_DIR
        self.tier = tier
        self._lock_file = Path(lock_dir) / "cold.lock"
        self._ready = False
        # manifest path -> (its stat identity, its entries): reloaded when the file changes
        self._loaded: dict[Path, tuple[tuple[int, int, int], dict[str, ColdEntry]]] = {}

    def _manifest(self, rel: str) -> Path:
        parts = rel.split("/")  # silver/bars/timeframe=X/bucket=B/...
        return self.root / parts[2] / f"{parts[3]}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # taken innermost (inside a partition lock, never around one): cannot deadlock
        self._lock_file.parent.mkdir(parents=True, exist_ok=True)
        with flocked(self._lock_file):
            yield

    def _describes_tier(self) -> bool:
        try:
            return bool(json.loads((self.root / _TIER_FILE).read_text())["url"] == self.tier.url)
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def ensure(self) -> None:
        """Build the index from a listing of the archive if it is missing or for another URL."""
        if self._ready:
            return
        if not self._describes_tier():
            with self._locked():
                if not self._describes_tier():
                    self._rebuild_locked()
        self._ready = True

    def rebuild(self) -> int:
        """Rebuild the index from a listing of the archive; return the cold files found.

        Reads each cold file's symbol and ts columns. Needed only after the archive was
        changed other than by `archive_expired`.
        """
        with self._locked():
            count = self._rebuild_locked()
        self._ready = True
        return count

    def _rebuild_locked(self) -> int:
        manifests: dict[Path, dict[str, Any]] = {}
        listing = self.tier.listing()
        for rel, info in listing.items():
            frame = self.tier.read(rel, columns=["symbol", "ts"])
            if frame is None:  # gone since the listing
                continue
            manifests.setdefault(self._manifest(rel), {})[rel] = ColdEntry.of(
                rel, info, frame
            ).to_json()
        for old in self.root.glob("timeframe=*/bucket=*.json"):
            if old not in manifests:
                old.unlink()
        for path, entries in manifests.items():
            _write_json(path, entries)
        _write_json(self.root / _TIER_FILE, {"url": self.tier.url})
        self._loaded.clear()
        return len(listing)

    def record(self, entries: list[ColdEntry]) -> None:
        """Add or replace cold files' entries (after writing the files)."""
        self.ensure()
        by_manifest: dict[Path, list[ColdEntry]] = {}
        for entry in entries:
            by_manifest.setdefault(self._manifest(entry.rel), []).append(entry)
        with self._locked():
            for path, mine in by_manifest.items():
                try:
                    stored = json.loads(path.read_text())
                except FileNotFoundError:
                    stored = {}
                stored.update({e.rel: e.to_json() for e in mine})
                _write_json(path, dict(sorted(stored.items())))

    def _load(self, path: Path) -> dict[str, ColdEntry]:
        try:
            key = file_identity(path)
        except FileNotFoundError:
            return {}
        cached = self._loaded.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            # keyed by the identity of what was read: archival may replace it meanwhile
            with open(path, "rb") as handle:
                key = handle_identity(handle)
                raw = json.loads(handle.read())
            entries = {rel: ColdEntry.from_json(rel, v) for rel, v in raw.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise StorageError("cannot read the cold index", path=str(path)) from exc
        self._loaded[path] = (key, entries)
        return entries

    def bucket(self, timeframe: str, bucket: int) -> dict[str, ColdEntry]:
        """Return the cold files of one timeframe and bucket, by relative path (sorted)."""
        self.ensure()
        return self._load(self.root / f"timeframe={timeframe}" / f"bucket={bucket:03d}.json")

    def entries(self, timeframe: str | None = None) -> list[ColdEntry]:
        """Return every cold file's entry (of one timeframe, or all), sorted by path."""
        self.ensure()
        pattern = f"timeframe={timeframe}" if timeframe else "timeframe=*"
        out: list[ColdEntry] = []
        for path in sorted(self.root.glob(f"{pattern}/bucket=*.json")):
            out.extend(self._load(path).values())
        return sorted(out, key=lambda e: e.rel)

    def timeframes(self) -> list[str]:
        """Return the timeframes with cold files."""
        self.ensure()
        return sorted(
            {
                p.parent.name[len("timeframe=") :]
                for p in self.root.glob("timeframe=*/bucket=*.json")
            }
        )


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid4().hex}.json"
    tmp.write_text(json.dumps(value, separators=(",", ":")))
    os.replace(tmp, path)
