"""Backup and restore of an embedded data directory, verified by SHA-256 checksums.

A backup holds every lake file (silver bars and their history, actions, quarantine,
bronze payloads) copied while all partition locks are held, a consistent copy of the
SQLite catalog (its online backup API), and `manifest.json` listing each file's size and
checksum, written last: a backup without a manifest is incomplete. Restore checks every
checksum before copying anything, into an empty directory only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantivista.errors import StorageError
from quantivista.storage.lake import ParquetLake

__all__ = ["MANIFEST", "backup", "restore", "verify"]

MANIFEST = "manifest.json"
_CATALOG = "catalog.sqlite"
_SKIP_DIRS = {".locks"}


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
        if rel.parts[0].startswith(_CATALOG):  # the catalog and its WAL: copied by sqlite
            continue
        files.append(path)
    return files


def backup(root: Path, dest: Path) -> dict[str, Any]:
    """Write a verified snapshot of the data directory `root` into the new directory `dest`."""
    root, dest = Path(root), Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise StorageError("backup destination is not empty", dest=str(dest))
    dest.mkdir(parents=True, exist_ok=True)
    lake = ParquetLake(root)
    entries: dict[str, dict[str, Any]] = {}
    with lake.frozen():
        for path in _lake_files(root):
            rel = path.relative_to(root).as_posix()
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        catalog = root / _CATALOG
        if catalog.exists():
            src = sqlite3.connect(catalog)
            dst = sqlite3.connect(dest / _CATALOG)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        rel = path.relative_to(dest).as_posix()
        entries[rel] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {
        "format": 1,
        "created_at": datetime.now(UTC).isoformat(),
        "files": entries,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def verify(src: Path) -> dict[str, Any]:
    """Check every file of the backup at `src` against its manifest; return the manifest."""
    src = Path(src)
    try:
        manifest: dict[str, Any] = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise StorageError("backup has no readable manifest", src=str(src)) from exc
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
        raise StorageError("backup files fail their checksums", files=bad[:10], count=len(bad))
    return manifest


def restore(src: Path, root: Path) -> dict[str, Any]:
    """Restore the verified backup at `src` into the empty (or new) directory `root`."""
    src, root = Path(src), Path(root)
    if root.exists() and any(root.iterdir()):
        raise StorageError("restore target is not empty", root=str(root))
    manifest = verify(src)
    for rel in manifest["files"]:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)
    return manifest
