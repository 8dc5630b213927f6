"""Load one equity from a QuantConnect Lean data folder into a platform."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from quantivista.actions.lean import (
    factor_file_actions,
    map_file_actions,
    map_file_history,
    read_factor_file,
    read_lean_daily,
    read_map_file,
)
from quantivista.errors import NotFoundError

if TYPE_CHECKING:
    from quantivista.platform import Platform

__all__ = ["LeanImport", "import_lean_equity"]


@dataclass(frozen=True)
class LeanImport:
    """What an import stored."""

    tickers: list[str]
    bars: int
    actions: int


def import_lean_equity(p: Platform, root: str | Path, symbol: str) -> LeanImport:
    """Import `symbol` from a Lean `equity/usa` folder: bars, actions and ticker history.

    Reads `map_files/<symbol>.csv` (when present), `factor_files/<symbol>.csv` and
    `daily/<ticker>.zip` of every ticker the map file names. Bars are stored under the
    ticker in use (reads follow the renames); the instrument master gets the history
    under the instrument id `symbol`.
    """
    base, sym = Path(root), symbol.lower()
    map_path, factor_path = base / "map_files" / f"{sym}.csv", base / "factor_files" / f"{sym}.csv"
    if map_path.exists():
        rows = read_map_file(map_path)
        history = map_file_history(rows)
        actions = map_file_actions(rows)
        p.instruments.load_ticker_history(symbol.upper(), history)
    else:
        history = None
        actions = pl.DataFrame()
    tickers = (
        history["ticker"].unique(maintain_order=True).to_list()
        if history is not None
        else [symbol.upper()]
    )
    if factor_path.exists():
        factors = factor_file_actions(read_factor_file(factor_path), symbol, history=history)
        actions = pl.concat([actions, factors]) if actions.height else factors
    bars = 0
    for ticker in tickers:  # a loop over files, not rows
        path = base / "daily" / f"{ticker.lower()}.zip"
        if path.exists():
            bars += p.write_bars(read_lean_daily(path, ticker), source="lean").total_records
    if not bars and not actions.height:
        raise NotFoundError(f"no Lean files for {symbol} under {base}")
    written = p.write_actions(actions, provider="lean") if actions.height else 0
    return LeanImport(tickers, bars, written)
