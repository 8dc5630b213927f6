"""Remove the temporaries that killed writers left in a lake (`qv compact` calls it).

Every file the lake writes whole is first written under a hidden name beside its final
place and then renamed: `.tmp-<uuid>...` (`files` atomic writes, score compaction, bronze
payloads, the layout and cold-index JSON, reporting tables, cold files), `.tmp-merge-...`
(a delta merge) and `.tmp-fold-...` (a fold built ahead). A process killed between the
write and the rename leaves its temporary for good: listings skip it and only a partition's
own directory is swept again (by its next write, under its lock); the delta, score, bronze,
index and cold folders are not.

Merges and folds write their temporaries without any lock, so no lock the sweeper could
take tells a live one from a killed one; their age does. A live writer owns its temporary
for one file write plus a wait for partition locks (seconds); one not modified for
`after_s` (`storage.sweep_after_s`, an hour by default) is a leftover. The clock is the
file system's (mtimes are wall-clock times), not the platform's injectable one.
"""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from quantivista.storage.lake.cold import ColdTier

__all__ = ["PREFIX", "sweep_cold", "sweep_lake"]

PREFIX = ".tmp-"  # every temporary the lake writes, and nothing else, starts with it
_log = logging.getLogger(__name__)


def sweep_lake(root: Path, *, after_s: float, now: float | None = None) -> list[Path]:
    """Remove the temporaries under `root` not modified for `after_s`; return them."""
    now = time.time() if now is None else now
    removed = []
    for path in sorted(root.rglob(f"{PREFIX}*")):
        try:
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < after_s:
                continue
            path.unlink()
        except FileNotFoundError:  # its writer renamed or removed it meanwhile
            continue
        removed.append(path)
    if removed:
        _log.warning("removed %d temporaries left by killed writers", len(removed))
    return removed


def sweep_cold(tier: ColdTier, *, after_s: float, now: float | None = None) -> list[str]:
    """Remove the cold tier's temporaries older than `after_s`; return their paths.

    A listing that gives no modification time (some object stores) removes nothing.
    """
    now = time.time() if now is None else now
    try:
        found: dict[str, Mapping[str, Any]] = tier.fs.find(tier.base, detail=True)
    except FileNotFoundError:
        return []
    removed = []
    for name, info in sorted(found.items()):
        if not str(name).rsplit("/", 1)[-1].startswith(PREFIX):
            continue
        modified = _modified(info)
        if modified is None or now - modified < after_s:
            continue
        try:
            tier.fs.rm_file(name)
        except FileNotFoundError:
            continue
        removed.append(str(name))
    if removed:
        _log.warning("removed %d cold temporaries left by killed writers", len(removed))
    return removed


def _modified(info: Mapping[str, Any]) -> float | None:
    """Return a listed file's modification time (seconds since the epoch), if it has one."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None
