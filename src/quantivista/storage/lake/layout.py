"""The one place the embedded data directory's tree is spelled out.

<root>/
  silver/bars/_layout.json, timeframe=X/bucket=B[/month=M]/data.arrow     bars (or .parquet)
  history/bars/timeframe=X/bucket=B[/month=M]/<uuid>.parquet               superseded bars
  silver/actions/data.parquet                                              corporate actions
  quarantine/bars/job_id=<id>/<uuid>.parquet, quarantine/released/         quarantine
  quality/scores/job_id=<id>/<uuid>[.runs].parquet                         quality scores
  bronze/<provider>/<sha[:2]>/<sha>, bronze/_manifest/job_id=<id>/         raw payloads
  reference/instruments.parquet, reference/symbol_history.parquet          instrument master
  catalog.sqlite                                                           jobs, tasks, reports
  workflows.sqlite                                                         reporting-side catalog
  reporting/<table>/tenant_id=<t>/<partition>=<v>/<job_id>.parquet        reporting data lake
  cold_index/                                                              cold tier index
  .locks/                                                                  flock files

Several processes may write into one data directory. `.locks/` holds the `flock` files
that make their read-modify-writes atomic: `00.lock`..`63.lock` (partition stripes, by
the partition's path inside the lake), `actions`, `instruments`, `archive` (one archival
at a time), `cold` (the cold index) and `catalog` (opening the SQLite catalog). Files
that are ever replaced are replaced by renaming a hidden `.tmp-*` temporary; listings
skip hidden names (see `files`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BAR_ARROW_FILE",
    "BAR_DATA_FILE",
    "BAR_LAYOUT_FILE",
    "CATALOG_FILE",
    "LakeLayout",
    "bar_base",
    "bar_base_files",
]

BAR_DATA_FILE = "data.parquet"
BAR_ARROW_FILE = "data.arrow"  # a base as Arrow IPC (`storage.daily_format`, `intraday_format`)
BAR_LAYOUT_FILE = "_layout.json"
CATALOG_FILE = "catalog.sqlite"


def bar_base(directory: Path) -> Path:
    """Return the path of a bar partition's base file: Arrow IPC if there is one, else
    Parquet (which may not exist). A partition keeps the format it was created in."""
    arrow = directory / BAR_ARROW_FILE
    return arrow if arrow.exists() else directory / BAR_DATA_FILE


def bar_base_files(bars_root: Path, timeframe: str | None = None) -> list[Path]:
    """Return the bars' base files (of one timeframe, or all), sorted: one per partition,
    the one `bar_base` picks, so a stray Parquet file beside an Arrow base is not listed.
    Reads, SQL, stats, the storage report, archival and retention all list them here."""
    pattern = f"timeframe={timeframe}" if timeframe else "timeframe=*"
    folders = {
        path.parent
        for name in (BAR_DATA_FILE, BAR_ARROW_FILE)
        for path in bars_root.glob(f"{pattern}/bucket=*/**/{name}")
    }
    return sorted(bar_base(folder) for folder in folders)


@dataclass(frozen=True, slots=True)
class LakeLayout:
    """Paths of every store in a data directory."""

    root: Path

    @property
    def bars(self) -> Path:
        return self.root / "silver" / "bars"

    @property
    def bars_layout(self) -> Path:
        return self.bars / BAR_LAYOUT_FILE

    @property
    def bars_history(self) -> Path:
        return self.root / "history" / "bars"

    @property
    def actions(self) -> Path:
        return self.root / "silver" / "actions" / "data.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine" / "bars"

    @property
    def released(self) -> Path:
        return self.root / "quarantine" / "released"

    @property
    def scores(self) -> Path:
        return self.root / "quality" / "scores"

    @property
    def bronze(self) -> Path:
        return self.root / "bronze"

    @property
    def instruments(self) -> Path:
        return self.root / "reference" / "instruments.parquet"

    @property
    def symbol_history(self) -> Path:
        return self.root / "reference" / "symbol_history.parquet"

    @property
    def catalog(self) -> Path:
        return self.root / CATALOG_FILE

    @property
    def workflows(self) -> Path:
        return self.root / "workflows.sqlite"

    @property
    def reporting(self) -> Path:
        return self.root / "reporting"

    @property
    def cold_index(self) -> Path:
        return self.root / "cold_index"

    @property
    def locks(self) -> Path:
        return self.root / ".locks"

    def lock_file(self, name: str) -> Path:
        """Return the flock file guarding one read-modify-write store (created on demand)."""
        self.locks.mkdir(parents=True, exist_ok=True)
        return self.locks / f"{name}.lock"

    def is_store(self) -> bool:
        """Say whether the directory holds a QuantiVista store (not just any folder)."""
        return self.bars_layout.exists() or self.catalog.exists()
