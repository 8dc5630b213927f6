"""Backup and restore of a data directory (and its PostgreSQL bars), verified by SHA-256.

A backup holds every lake file (silver bars and their history, actions, quarantine,
bronze payloads) copied while all partition locks are held, a consistent copy of the
SQLite catalog (its online backup API), and `manifest.json` listing each file's size and
checksum, written last: a backup without a manifest is incomplete. With the PostgreSQL
backend no state lives in the data directory: the backup holds every table of the schema
instead, as one snapshot (see `storage.postgres.backup`), listed in the manifest like any
file, with the migration revision. Restore checks every checksum before copying anything,
into an empty directory (and an empty schema) only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantivista.errors import StorageRejectedError, StorageUsageError
from quantivista.storage.lake.bars import ParquetLake

if TYPE_CHECKING:
    from quantivista.config import Settings

__all__ = ["MANIFEST", "PostgresBars", "backup", "restore", "verify"]

MANIFEST = "manifest.json"
_CATALOG = "catalog.sqlite"
# SQLite files copied through the online backup API (a plain copy may miss the WAL's pages)
_SQLITE = (_CATALOG, "workflows.sqlite")
_SKIP_DIRS = {".locks"}


@dataclass(frozen=True, slots=True)
class PostgresBars:
    """Where the bars live when the backend is PostgreSQL: a DSN and a schema."""

    dsn: str = field(repr=False)  # may hold a password
    schema: str

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresBars | None:
        """Return the PostgreSQL bar store of `settings`, or None for the lake backend."""
        if settings.storage.backend != "postgres":
            return None
        dsn = settings.services.postgres_dsn.get_secret_value()
        return cls(dsn, settings.storage.postgres_schema)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lake_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in _SKIP_DIRS or path.name.startswith(".tmp-"):
            continue
        if rel.parts[0].startswith(_SQLITE):  # the catalogs and their WALs: copied by sqlite
            continue
        files.append(path)
    return files


def backup(root: Path, dest: Path, postgres: PostgresBars | None = None) -> dict[str, Any]:
    """Write a verified snapshot of the data directory `root` into the new directory `dest`.

    With `postgres`, the bars and their history in that schema are part of the snapshot.
    """
    root, dest = Path(root), Path(dest)
    existed = dest.exists()
    if existed and not dest.is_dir():
        raise StorageUsageError("backup destination is a file, not a directory", dest=str(dest))
    if existed and any(dest.iterdir()):
        raise StorageUsageError("backup destination is not empty", dest=str(dest))
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return _snapshot(root, dest, postgres)
    except Exception:
        # everything in `dest` is ours (it was empty); a partial backup would only make the
        # next attempt fail with "not empty"
        for child in list(dest.iterdir()) if existed else [dest]:
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        raise


def _snapshot(root: Path, dest: Path, postgres: PostgresBars | None) -> dict[str, Any]:
    entries: dict[str, dict[str, Any]] = {}
    if postgres is None:
        _copy_lake(root, dest)
    pg_meta = None
    if postgres is not None:
        from quantivista.storage.postgres.backup import dump

        pg_meta = dump(postgres.dsn, postgres.schema, dest)
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        rel = path.relative_to(dest).as_posix()
        entries[rel] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    manifest: dict[str, Any] = {
        "format": 1,
        "created_at": datetime.now(UTC).isoformat(),
        "backend": "lake" if pg_meta is None else "postgres",
        "files": entries,
    }
    if pg_meta is not None:
        manifest["postgres"] = pg_meta
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _copy_lake(root: Path, dest: Path) -> None:
    """Copy the lake's files (under all partition locks) and its SQLite catalog into `dest`."""
    lake = ParquetLake(root)
    with lake.frozen():
        for path in _lake_files(root):
            rel = path.relative_to(root).as_posix()
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        for name in _SQLITE:
            catalog = root / name
            if not catalog.exists():
                continue
            src = sqlite3.connect(catalog)
            dst = sqlite3.connect(dest / name)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()


def verify(src: Path) -> dict[str, Any]:
    """Check every file of the backup at `src` against its manifest; return the manifest."""
    src = Path(src)
    try:
        manifest: dict[str, Any] = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise StorageUsageError("backup has no readable manifest", src=str(src)) from exc
    bad = []
    for rel, meta in manifest["files"].items():
        path = src / rel
        if (
            not path.is_file()
            or path.stat().st_size != meta["bytes"]
            or _sha256(path) != meta["sha256"]
        ):
            bad.append(rel)
    if bad:
        raise StorageRejectedError(
            "backup files fail their checksums", files=bad[:10], count=len(bad)
        )
    return manifest


def restore(src: Path, root: Path, postgres: PostgresBars | None = None) -> dict[str, Any]:
    """Restore the verified backup at `src` into the empty (or new) directory `root`.

    A backup of PostgreSQL bars needs `postgres`, an empty (or new) schema to load them
    into; every check runs before anything is written.
    """
    src, root = Path(src), Path(root)
    if not src.is_dir():
        raise StorageUsageError("no backup directory there", src=str(src))
    if root.exists() and not root.is_dir():
        raise StorageUsageError("restore target is a file, not a directory", root=str(root))
    if root.exists() and any(root.iterdir()):
        raise StorageUsageError("restore target is not empty", root=str(root))
    manifest = verify(src)
    pg_meta = manifest.get("postgres")
    if pg_meta is None and postgres is not None:
        raise StorageUsageError(
            "the backup holds no PostgreSQL bars; restore it with the lake backend"
        )
    if pg_meta is not None and postgres is None:
        raise StorageUsageError(
            "the backup holds PostgreSQL bars; restore it with backend postgres"
        )
    if pg_meta is not None and postgres is not None:
        from quantivista.storage.postgres.backup import check_target, load

        missing = [
            t["file"] for t in pg_meta["tables"].values() if t["file"] not in manifest["files"]
        ]
        if missing:
            raise StorageRejectedError(
                "backup manifest does not list its PostgreSQL files", files=missing
            )
        check_target(postgres.dsn, postgres.schema, pg_meta)
        load(postgres.dsn, postgres.schema, src, pg_meta)
    pg_files = {t["file"] for t in pg_meta["tables"].values()} if pg_meta else set()
    for rel in manifest["files"]:
        if rel in pg_files:
            continue
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)
    return manifest
